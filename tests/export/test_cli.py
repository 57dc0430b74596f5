import subprocess
import sys

from click.testing import CliRunner

from mnt.export.cli import main
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
