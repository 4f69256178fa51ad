"""The `protege` CLI as a user runs it (subprocesses, real files)."""

import json
import subprocess
import sys

import httpx
import pytest
import yaml

EVAL_KEYS = {"qa_closed_book", "ifeval_strict", "ifeval_loose", "n_qa", "n_ifeval"}


@pytest.fixture
def cli(sandbox_test, tmp_path):
    config = tmp_path / "profile.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "home": str(tmp_path / "home"),
                "sandbox": {
                    "size": sandbox_test.size,
                    "seed": sandbox_test.seed,
                    "dir": str(sandbox_test.root.parent),
                },
                "learner": {"eval": {"max_new_tokens": 8}},
            }
        )
    )

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "assistant.cli", "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=300,
        )

    return run


def test_sandbox_build_reuses_and_prints_manifest(cli, sandbox_test):
    out = cli("sandbox", "build", "--size", "test", "--seed", str(sandbox_test.seed), "--json")
    assert out.returncode == 0, out.stderr
    manifest = json.loads(out.stdout)
    assert manifest["student_dir"] == str(sandbox_test.student_dir)
    assert [d["name"] for d in manifest["days"]][:3] == ["day1", "day2", "day3"]
    for day in manifest["days"]:
        assert all(day[k] for k in ("documents_dir", "qa_file", "ifeval_file"))


def test_eval_prints_scores_as_json(cli, sandbox_test):
    day = sandbox_test.days[0]
    out = cli(
        "eval",
        "--qa",
        str(day.qa_file),
        "--ifeval",
        str(day.ifeval_file),
        "--adapter",
        "base",
        "--limit",
        "6",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    scores = json.loads(out.stdout)
    assert EVAL_KEYS <= scores.keys() and scores["adapter"] == "base"
    assert all(0.0 <= scores[k] <= 1.0 for k in ("qa_closed_book", "ifeval_strict", "ifeval_loose"))
    assert scores["n_qa"] == 6 and scores["n_ifeval"] == 6
    assert "qa_open_book" not in scores  # nothing ingested: no retrieval to read from


def test_eval_adds_open_book_qa_once_documents_are_ingested(cli, sandbox_test):
    day = sandbox_test.days[0]
    ingest = cli("ingest", str(day.documents_dir))
    assert ingest.returncode == 0, ingest.stderr
    out = cli("eval", "--qa", str(day.qa_file), "--adapter", "base", "--limit", "4", "--json")
    assert out.returncode == 0, out.stderr
    scores = json.loads(out.stdout)
    assert 0.0 <= scores["qa_open_book"] <= 1.0 and 0.0 <= scores["qa_closed_book"] <= 1.0


def test_adapters_list_and_errors(cli):
    listing = cli("adapters", "list")
    assert listing.returncode == 0 and "served: base" in listing.stdout
    missing = cli("adapters", "promote", "v0042")
    assert missing.returncode == 2 and "no adapter 'v0042'" in missing.stderr
    nothing = cli("train", "--now", "--no-notify")
    assert nothing.returncode == 0 and '"status": "skipped"' in nothing.stdout


def test_serve_takes_host_and_port_and_config_after_the_verb(sandbox_test, tmp_path):
    from serve_process import free_port, start, write_config

    home = tmp_path / "serve-home"
    profile_port, port = free_port(), free_port()
    config = write_config(home, sandbox_test.student_dir, profile_port)
    argv = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    server = start(home, config, port, argv=argv)
    try:
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
        with pytest.raises(httpx.ConnectError):  # the flag, not the profile, chose the port
            httpx.get(f"http://127.0.0.1:{profile_port}/healthz", timeout=2)
    finally:
        server.stop()


def test_global_options_before_or_after_the_verb():
    from assistant.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["--config", "a", "documents", "list"]).config == "a"
    assert parser.parse_args(["documents", "list", "--config", "b"]).config == "b"
    assert parser.parse_args(["train", "--now", "-v", "--config", "c"]).verbose
    assert parser.parse_args(["serve"]).config is None


def test_serve_rejects_a_bad_port(capsys):
    from assistant.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["serve", "--port", "70000"])
    assert exc.value.code == 2
    assert "port must be 1-65535" in capsys.readouterr().err
