#!/usr/bin/env python3
"""Checks README.md and the book (docs/src) against the repository and the binary.

    scripts/docs_check.py links
        every relative link resolves to a file (and a heading, for `#anchor`);
        every page under docs/src is in SUMMARY.md
    scripts/docs_check.py commands LEXTRAL_BINARY
        every `lextral ...` command line (sh blocks and inline code) names a
        subcommand that exists and only flags its `--help` lists
"""

import functools
import pathlib
import re
import shlex
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
BOOK = ROOT / "docs" / "src"


def documents():
    extra = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "helm" / "lextral" / "README.md"]
    return [d for d in extra if d.exists()] + sorted(BOOK.rglob("*.md"))


def without_code(text):
    """The text with fenced blocks and inline code blanked (links inside code are not links)."""
    text = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    return re.sub(r"`[^`\n]*`", "``", text)


def slug(heading):
    """The anchor mdBook and GitHub give a heading."""
    heading = re.sub(r"[`*_]|<[^>]+>", "", heading).strip().lower()
    heading = re.sub(r"[^\w\- ]", "", heading)
    return heading.replace(" ", "-")


def expanded(path):
    """The page's text with mdBook's {{#include FILE}} lines replaced by FILE."""
    return re.sub(r"^\{\{#include ([^}]+)\}\}$",
                  lambda m: (path.parent / m.group(1)).read_text(), path.read_text(), flags=re.M)


@functools.cache
def anchors(path):
    text = expanded(path)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def check_links():
    problems = []
    for document in documents():
        for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", without_code(document.read_text())):
            if re.match(r"^[a-z]+:", target) or target.startswith("//"):
                continue
            path, _, anchor = target.partition("#")
            resolved = (document.parent / path).resolve() if path else document
            where = f"{document.relative_to(ROOT)}: {target}"
            if not resolved.exists():
                problems.append(f"{where}: no such file")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                problems.append(f"{where}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    summary = (BOOK / "SUMMARY.md").read_text()
    listed = {(BOOK / p).resolve() for p in re.findall(r"\]\(([^)]+\.md)\)", summary)}
    for page in BOOK.rglob("*.md"):
        if page.name != "SUMMARY.md" and page.resolve() not in listed:
            problems.append(f"{page.relative_to(ROOT)}: not in SUMMARY.md")
    return problems


def command_lines(text):
    """`lextral ...` lines from sh blocks (continuations joined) and inline code."""
    lines = []
    for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("lextral "):
                lines.append(line)
    for code in re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S)):
        if code.startswith("lextral "):
            lines.append(code)
    return lines


@functools.cache
def help_of(binary, path):
    done = subprocess.run([binary, *path, "--help"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "10000"})
    if done.returncode != 0:
        return None
    return done.stdout


def subcommands(help_text):
    names, inside = set(), False
    for line in help_text.splitlines():
        if re.match(r"^\S.*:$", line):
            inside = line.startswith("Commands:")
            continue
        match = re.match(r"^  (\S+)", line)
        if inside and match:
            names.update(match.group(1).rstrip(",").split(","))
    names.discard("help")
    return names


def flags(help_text):
    return set(re.findall(r"(?<![\w-])(--[a-z0-9][\w-]*)", help_text)) | {"--help"}


def words(line):
    line = line.split(" #", 1)[0].split(" | ", 1)[0].split(" > ", 1)[0]
    line = line.replace("…", " ").replace("...", " ")
    try:
        tokens = shlex.split(line)
    except ValueError:
        tokens = line.split()
    out = []
    for token in tokens[1:]:
        token = token.strip("[]()")
        if token in ("&&", ";", "|", "&"):
            break
        if token:
            out.append(token)
    return out


def check_command(binary, line):
    tokens = words(line)
    path = []
    # Subcommands: alternatives written a|b|c are each checked.
    while tokens and not tokens[0].startswith("-"):
        help_text = help_of(binary, tuple(path))
        names = subcommands(help_text or "")
        if not names:
            break
        choices = tokens[0].split("|")
        if re.search(r"[<>A-Z]", tokens[0]) and tokens[0] not in names:
            return []  # a placeholder such as <command>
        missing = [c for c in choices if c not in names]
        if missing:
            return [f"`{line}`: no subcommand {' '.join(['lextral', *path, missing[0]])}"]
        if len(choices) > 1:
            problems = []
            for choice in choices:
                problems += check_command(binary, " ".join(["lextral", *path, choice, *tokens[1:]]))
            return problems
        path.append(tokens.pop(0))
    help_text = help_of(binary, tuple(path))
    if help_text is None:
        return [f"`{line}`: `lextral {' '.join(path)} --help` failed"]
    known = flags(help_text)
    problems = []
    for token in tokens:
        for flag in re.findall(r"^(--[a-z0-9][\w-]*)", token.split("=", 1)[0]):
            for alternative in flag.split("|"):
                if alternative not in known:
                    problems.append(f"`{line}`: lextral {' '.join(path)} has no {alternative}")
    return problems


def check_commands(binary):
    problems, seen = [], 0
    for document in documents():
        for line in command_lines(document.read_text()):
            seen += 1
            problems += [f"{document.relative_to(ROOT)}: {p}" for p in check_command(binary, line)]
    print(f"docs: {seen} lextral command lines checked")
    return problems


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "links":
        problems = check_links()
    elif len(sys.argv) == 3 and sys.argv[1] == "commands":
        problems = check_commands(sys.argv[2])
    else:
        sys.exit(__doc__)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        sys.exit(f"docs: {len(problems)} problem(s)")


if __name__ == "__main__":
    main()
