import json
import subprocess
import sys
from importlib.metadata import version

import pytest
from click.testing import CliRunner

from mnt.export.cli import main
from mnt.runtime.console import EXIT_CODES
from tests.helpers import console_script


def test_init_writes_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "tiny.safetensors"
    runner = CliRunner()
    result = runner.invoke(main, ["init", "--preset", "tiny", "--seed", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and out.stat().st_size > 1_000_000
    before = out.read_bytes()
    again = runner.invoke(main, ["init", "--preset", "tiny", "--seed", "2", "-o", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output and "--force" in again.output
    assert out.read_bytes() == before
    forced = runner.invoke(main, ["init", "--seed", "2", "-o", str(out), "--force"])
    assert forced.exit_code == 0 and out.read_bytes() != before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_unwritable_folder_gives_one_line_and_no_file(tmp_path):
    out = tmp_path / "missing-folder" / "x.safetensors"
    result = CliRunner().invoke(main, ["init", "-o", str(out)])
    assert result.exit_code == 1
    assert result.output.strip().startswith("mnt-export: error: cannot write")
    assert "missing-folder" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_describe_prints_components(tmp_path):
    result = CliRunner().invoke(main, ["describe", "--preset", "tiny"])
    assert result.exit_code == 0, result.output
    for name in ("target_encoder", "generator", "landmark_disentangler"):
        assert name in result.output


def test_bad_checkpoint_through_the_real_cli(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    result = subprocess.run([console_script("mnt-export"), "describe", "--checkpoint", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        line for line in result.stderr.strip().splitlines() if line.startswith("mnt-export: error:")]
    assert str(bad) in result.stderr and "Traceback" not in result.stderr
    verbose = subprocess.run([console_script("mnt-export"), "-v", "describe", "--checkpoint", str(bad)],
                             capture_output=True, text=True)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr


def test_help_explains_every_command():
    result = subprocess.run([sys.executable, "-m", "mnt.export.cli", "init", "--help"],
                            capture_output=True, text=True)
    text = " ".join(result.stdout.split()).replace("- ", "-")  # undo click's line wrapping
    assert result.returncode == 0 and "--preset" in text and "byte-identical" in text


# Exit codes, --version, -v and --json: the conventions every command shares.


@pytest.fixture(scope="module")
def artefact(tiny_artefacts):
    return tiny_artefacts("fp32")


def _boom(*args, **kwargs):
    raise RuntimeError("boom\nsecond line")


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_user_and_usage_errors_exit_1_and_2(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(main, ["inspect", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and missing.stderr.startswith("mnt-export: error:")
    assert runner.invoke(main, ["inspect"]).exit_code == 2  # missing argument
    assert runner.invoke(main, ["inspect", "--bogus", str(tmp_path)]).exit_code == 2
    assert runner.invoke(main, ["no-such-command"]).exit_code == 2


def test_unexpected_exception_exits_4_with_one_line(monkeypatch, tmp_path):
    import mnt.export.onnx.verify

    monkeypatch.setattr(mnt.export.onnx.verify, "summarise", _boom)
    result = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert result.exit_code == 4
    assert result.stderr.splitlines() == [
        "mnt-export: internal error: RuntimeError: boom second line (run with -v for the traceback; "
        "please report it)"]
    verbose = CliRunner().invoke(main, ["inspect", "-v", str(tmp_path)])
    assert verbose.exit_code == 4 and "Traceback" in verbose.stderr
    assert verbose.stderr.splitlines()[-1].startswith("mnt-export: internal error: RuntimeError: boom")


def test_ctrl_c_exits_130(monkeypatch, tmp_path):
    import mnt.export.onnx.verify

    monkeypatch.setattr(mnt.export.onnx.verify, "summarise", _interrupt)
    result = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert result.exit_code == 130 and result.stderr.strip() == "mnt-export: interrupted"


def test_mnt_run_and_mnt_bench_share_the_guard(monkeypatch, tmp_path):
    import mnt.export.bench.cli
    import mnt.runtime.cli

    monkeypatch.setattr(mnt.export.bench.cli, "run", _boom)
    bench = CliRunner().invoke(mnt.export.bench.cli.main, [])
    assert bench.exit_code == 4 and bench.stderr.startswith("mnt-bench: internal error: RuntimeError")
    monkeypatch.setattr(mnt.runtime.cli, "run", _interrupt)
    run = CliRunner().invoke(mnt.runtime.cli.main, ["x.mp4", "--targets", str(tmp_path)])
    assert run.exit_code == 130 and "mnt-run: interrupted" in run.stderr
    missing = CliRunner().invoke(mnt.runtime.cli.main, [])
    assert missing.exit_code == 1 and missing.stderr.startswith("mnt-run: error:")


def test_version_and_exit_codes_on_every_command():
    from mnt.export.bench.cli import main as bench
    from mnt.runtime.cli import main as run

    for command, prog in ((main, "mnt-export"), (run, "mnt-run"), (bench, "mnt-bench")):
        result = CliRunner().invoke(command, ["--version"])
        assert result.exit_code == 0 and result.stdout.strip() == f"{prog}, version {version('mnt')}"
        text = CliRunner().invoke(command, ["--help"]).stdout
        assert "Exit codes:" in text and "-v, --verbose" in text
        assert all(f"  {code:<4} {meaning}" in text for code, meaning in EXIT_CODES)


def test_verbose_before_and_after_the_subcommand(tmp_path):
    runner = CliRunner()
    folder = str(tmp_path / "nope")
    quiet = runner.invoke(main, ["inspect", folder])
    assert quiet.exit_code == 1 and "Traceback" not in quiet.stderr
    for args in (["-v", "inspect", folder], ["inspect", "-v", folder], ["inspect", folder, "--verbose"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 1 and "Traceback" in result.stderr, args
        assert result.stderr.splitlines()[-1].startswith("mnt-export: error:")
    for name in main.commands:  # every subcommand, train and evaluate included
        assert "-v, --verbose" in runner.invoke(main, [name, "--help"]).stdout, name


def test_inspect_json_carries_the_numbers_of_the_text(artefact):
    runner = CliRunner()
    text = runner.invoke(main, ["inspect", str(artefact)])
    data = runner.invoke(main, ["inspect", str(artefact), "--json"])
    assert text.exit_code == 0 and data.exit_code == 0, data.output
    summary = json.loads(data.stdout)
    assert summary["precision"] == "fp32" and summary["folder"] == str(artefact)
    lines = {line.split()[0]: line for line in text.stdout.splitlines()[4:]}
    assert set(lines) == {c["name"] for c in summary["components"]}
    for c in summary["components"]:
        assert f"{c['psnr_db']:.1f}" in lines[c["name"]] and f"{c['max_abs_error']:.2e}" in lines[c["name"]]
        assert f"{c['size_bytes'] / 1e6:.1f}" in lines[c["name"]]
        assert c["dims"] or c["source"]  # the face components have fixed shapes and a source


def test_verify_json_carries_the_rows_and_the_verdict(artefact):
    runner = CliRunner()
    text = runner.invoke(main, ["verify", str(artefact)])
    data = runner.invoke(main, ["verify", "--json", str(artefact)])
    assert text.exit_code == 0 and data.exit_code == 0, data.output
    report = json.loads(data.stdout)
    verdict = report["verdict"]
    assert verdict["passed"] and verdict["failed"] == 0 and verdict["checks"] == len(report["rows"])
    assert text.stdout.strip().splitlines()[-1] == verdict["line"]
    lines = text.stdout.splitlines()[2:-1]
    assert len(lines) == len(report["rows"])
    for line, row in zip(lines, report["rows"], strict=True):
        assert line.split()[:2] == [row["component"], row["output"]] and row["status"] == "ok"
        assert f"{row['psnr_db']:.1f}" in line and f"{row['max_abs_error']:.2e}" in line


def test_drift_found_by_verify_exits_3(artefact, monkeypatch):
    from mnt.export.onnx import gates

    # A gate nothing can pass: every measured output drifts.
    monkeypatch.setitem(gates.THRESHOLDS, "fp32", {"rmse_vs_torch_fp32_max_ratio": 0.0,
                                                  "image_max_abs_error": 0.0, "image_min_psnr_db": 1e9})
    result = CliRunner().invoke(main, ["verify", str(artefact)])
    assert result.exit_code == 3, result.output
    assert result.stderr.strip().startswith("mnt-export: error:") and "checks failed" in result.stderr
    data = CliRunner().invoke(main, ["verify", "--json", str(artefact)])
    assert data.exit_code == 3
    verdict = json.loads(data.stdout)["verdict"]
    assert not verdict["passed"] and verdict["drifted"] == verdict["failed"] > 0
