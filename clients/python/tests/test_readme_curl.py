"""Every curl command in a `sh` block of README.md and the book (docs/src)
works as written against `lextral serve all` (the host and port swapped for the test's)."""

import json
import subprocess

import pytest

from conftest import documented_sh_blocks

def readme_commands():
    commands = []
    for block in documented_sh_blocks():
        current = []
        for line in block.splitlines():
            if line.startswith("curl "):
                if current:
                    commands.append("\n".join(current))
                current = [line]
            elif current and (current[-1].endswith("\\") or "\n".join(current).count("'") % 2):
                # A continued line, or inside a quoted multi-line body.
                current.append(line)
            elif current:
                commands.append("\n".join(current))
                current = []
        if current:
            commands.append("\n".join(current))
    return commands


def test_the_readme_shows_classify_labels_info_and_health():
    joined = "\n".join(readme_commands())
    for path in ["/v1/classify", "/v1/labels", "/v1/info", "/healthz", "/readyz", "/openapi.json"]:
        assert f"http://127.0.0.1:8080{path}" in joined, path


@pytest.mark.parametrize("command", readme_commands())
def test_readme_curl(stack, command):
    command = command.replace("127.0.0.1:8080", stack.http)
    # --fail-with-body: an HTTP error fails the command.
    command = command.replace("curl -s", "curl -s --fail-with-body", 1)
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    body = json.loads(result.stdout)
    if "/v1/classify" in command:
        answer = body["results"][0]
        assert answer["label"] and answer["answered_by"] in {"knn", "finetuned"}
        if '"cascade"' in command:
            assert len(answer["alternatives"]) >= 1
    elif "/v1/labels" in command:
        assert len(body["labels"]) > 1
    elif "/v1/info" in command:
        assert body["index"]["total"] == 80
    elif "/readyz" in command:
        assert body["status"] == "ready"
    elif "/openapi.json" in command:
        assert "/v1/classify" in body["paths"]
