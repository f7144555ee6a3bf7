"""click's own usage errors (an unknown option or command, a missing argument, a value out of range) as a user
meets them in a terminal: one ``error:`` line naming the command's help, exit status 2; bare ``lwayrt`` still
prints the help. Run through the real entry point in a child process, as a shell runs it."""

from __future__ import annotations

import re
import os
import subprocess
import sys

import pytest

_ENTRY = "import sys; from lway_rt.cli import main; sys.argv[0] = 'lwayrt'; sys.exit(main())"


def _lwayrt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _ENTRY, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["upscale", "--nope", "x"], "error: No such option '--nope'. Did you mean '--model'? (see 'lwayrt upscale --help')"),
    (["upscale"], "error: Missing argument 'INPUT...'. (see 'lwayrt upscale --help')"),
    (["upscale", "x", "-o", "y", "--tile", "-3"],
     "error: Invalid value for '--tile': -3 is not in the range x>=0. (see 'lwayrt upscale --help')"),
    (["--bogus"], "error: No such option '--bogus'. (see 'lwayrt --help')"),
    (["upscal", "x"], "error: No such command 'upscal'. Did you mean 'upscale'? (see 'lwayrt --help')"),
    (["serve_bench"], "error: No such command 'serve_bench'. Did you mean 'serve-bench'? (see 'lwayrt --help')"),
    (["frobnicate"], "error: No such command 'frobnicate'. (see 'lwayrt --help')"),
    (["upscale", "x", "-o"], "error: Option '-o' requires an argument. (see 'lwayrt upscale --help')"),  # no ctx
    (["export", "-m"], "error: Option '-m' requires an argument. (see 'lwayrt export --help')"),
    # the model as an argument, as upscale takes its inputs: said where it goes
    (["export", "my model.safetensors", "--out", "e"], "error: Got unexpected extra argument (my model.safetensors): "
     "the model goes after -m (lwayrt export -m 'my model.safetensors' ...) (see 'lwayrt export --help')"),
    (["serve-bench", "a.onnx"], "error: Got unexpected extra argument (a.onnx): the model goes after -m (lwayrt "
     "serve-bench -m a.onnx ...) (see 'lwayrt serve-bench --help')"),
    (["models", "list", "x"], "error: Got unexpected extra argument (x) (see 'lwayrt models list --help')"),
    # with -m given the extra argument is something else (an output name), and of two the model is a guess: no hint
    (["export", "-m", "m.pth", "out.onnx"], "error: Got unexpected extra argument (out.onnx) (see 'lwayrt export "
     "--help')"),
    (["serve-bench", "my model.pth", "b"], "error: Got unexpected extra arguments (my model.pth b) (see 'lwayrt "
     "serve-bench --help')"),
    # a file whose name begins with '-': click reads its first letter as an option; said how to name it
    (["upscale", "-dash.png", "-o", "y"], "error: No such option '-d': to name the file -dash.png, write ./-dash.png "
     "(see 'lwayrt upscale --help')"),
    (["upscale", "x", "--old.jpg"], "error: No such option '--old.jpg': to name the file --old.jpg, write ./--old.jpg "
     "(see 'lwayrt upscale --help')"),
    (["upscale", "x", "--my old.jpg"], "error: No such option '--my old.jpg': to name the file --my old.jpg, write "
     "'./--my old.jpg' (see 'lwayrt upscale --help')"),
    (["upscale", "x", "-o", "y", "-q", "-z"], "error: No such option '-z'. (see 'lwayrt upscale --help')"),
], ids=["option", "argument", "range", "group-option", "command", "underscore", "unknown", "no-value", "no-value-2",
        "model-argument", "model-argument-2", "extra-argument", "model-given", "two-extras", "dash-name",
        "dash-name-long", "dash-name-space", "dash-not-a-name"])
def test_a_usage_error_is_one_line_with_status_2(args, message):
    proc = _lwayrt(*args)
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr == message + "\n", proc.stderr


def test_a_file_whose_name_reads_as_an_option_and_its_value_is_named(tmp_path):
    """`lwayrt upscale a.png -out.png -o x` took -out.png as `-o ut.png` (then -o x), and dropped the file without a
    word; `-mine.png` read as `-m ine.png` (review 49L L3). A word that names a file there and reads as a short option
    is refused in one line with the way to name it, quoted where it holds a space (L4)."""
    for name in ("-out.png", "-x photo.png"):
        (tmp_path / name).write_bytes(b"")
    cases = [(["upscale", "a.png", "-out.png", "-o", "x"], "error: -out.png names a file, and reads as the option -o "
              "with the value ut.png: to name the file, write ./-out.png (see 'lwayrt upscale --help')"),
             (["upscale", "-x photo.png", "-o", "x"], "error: -x photo.png names a file, and reads as the option -x "
              "with the value  photo.png: to name the file, write './-x photo.png' (see 'lwayrt upscale --help')")]
    for args, message in cases:
        proc = subprocess.run([sys.executable, "-c", _ENTRY, *args], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path)
        assert proc.returncode == 2 and proc.stderr == message + "\n", proc.stderr
    proc = subprocess.run([sys.executable, "-c", _ENTRY, "upscale", "-o", str(tmp_path / "o"), "--", "-out.png"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "names a file" not in proc.stderr and "-out.png" in proc.stderr, proc.stderr  # (read as the file: empty)
    # the value of an option that takes one (an output folder named -out.png): taken as it is
    proc = subprocess.run([sys.executable, "-c", _ENTRY, "upscale", "a.png", "-o", "-out.png"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert "names a file" not in proc.stderr and proc.returncode != 0, proc.stderr  # (a.png is missing)


def test_bare_lwayrt_still_shows_the_help():
    proc = _lwayrt()
    assert proc.returncode == 2 and "Commands:" in proc.stdout + proc.stderr and "error:" not in proc.stderr


@pytest.mark.parametrize("command, first, second, param", [
    ("upscale", ["x", "-o", "a"], ["x", "--out", "a"], "out_dir"),
    ("export", ["-o", "a"], ["--out", "a"], "out_dir"),
    ("train-degae", ["-o", "a.safetensors"], ["--out", "a.safetensors"], "out"),
    ("train-degae", ["--iters", "7"], ["--iterations", "7"], "iters"),
    ("train-degae", ["--batch", "3"], ["--batch-size", "3"], "batch"),
    ("train-degae", ["--ckpt-every", "9"], ["--checkpoint-every", "9"], "ckpt_every"),
    ("adapt", ["x", "-m", "m", "-o", "a", "--iterations", "7"], ["x", "-m", "m", "-o", "a", "--iters", "7"], "iterations"),
    ("adapt", ["x", "-m", "m", "-o", "a", "--batch-size", "3"], ["x", "-m", "m", "-o", "a", "--batch", "3"], "batch_size"),
    ("adapt", ["x", "-m", "m", "-o", "a", "--checkpoint-every", "9"], ["x", "-m", "m", "-o", "a", "--ckpt-every", "9"], "checkpoint_every"),
    ("demo", ["--iterations", "7"], ["--iters", "7"], "iterations"),
    # review 56C-6: the stage-1 checkpoint is --stage1 everywhere, the output folder --output too, the model -m
    ("eval-degae", ["--checkpoint", "s.safetensors"], ["--stage1", "s.safetensors"], "checkpoint"),
    ("adapt", ["x", "-m", "m", "-o", "a"], ["x", "-m", "m", "--output", "a"], "out_dir"),
    ("export", ["-o", "e"], ["--output", "e"], "out_dir"),
    ("train-degae", ["-o", "a.safetensors"], ["--output", "a.safetensors"], "out"),
    ("demo", ["-o", "d"], ["--output", "d"], "out_dir"),
    ("demo", ["--model", "realsr-df2k-x4"], ["-m", "realsr-df2k-x4"], "models"),
])
def test_one_option_has_one_name_across_commands(command, first, second, param):
    """The output option is -o/--out on every command that writes files (export and train-degae had no -o, upscale
    no --out), and the training options take both spellings (adapt's --iterations / --batch-size /
    --checkpoint-every, train-degae's --iters / --batch / --ckpt-every): the other spelling was a usage error."""
    from lway_rt.cli import main

    cmd = main.get_command(None, command)
    one, other = cmd.make_context(command, list(first)), cmd.make_context(command, list(second))
    default = next(p.default for p in cmd.params if p.name == param)
    assert one.params[param] == other.params[param] and str(one.params[param]) != str(default)


def test_a_name_keeps_its_spaces_in_a_usage_error(tmp_path):
    """The one-line form joined every run of whitespace: a file named with two spaces was shown with one."""
    (tmp_path / "a  b.txt").write_text("mine")
    proc = _lwayrt("upscale", "x", "-o", str(tmp_path / "a  b.txt"))
    assert proc.returncode == 2 and "a  b.txt is a file" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    # and says what to do (click said "Directory '...' is a file." and no more: review 48C C12)
    assert "is a file, and this option names a folder: name a folder (see" in proc.stderr


def test_a_path_the_system_cannot_use_is_one_line(tmp_path):
    """A name longer than the file system allows (Python 3.11's Path.exists() raises for it) and an output name
    that is a link looping back on itself (Path.resolve() raises) gave tracebacks from whichever check met them
    first; they are one error line, exit status 1."""
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    long = "x" * 300
    for args in (["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / long)], ["eval-degae", "--data", long]):
        proc = _lwayrt(*args)
        assert proc.returncode == 1 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert re.search(r"\.\.\.x+ \(\d+ characters\): a name in it is 300 bytes, more than the 255 a file name "
                         "may have: use a shorter name", proc.stderr), proc.stderr  # (not "a shorter path": 55G G1)
    deep = "/".join(["y" * 250] * 20)  # names that fit, a path that does not (4096 bytes)
    proc = _lwayrt("upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / deep))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "the name is too long for the file system: use a shorter path" in proc.stderr, proc.stderr
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a_x4.png").symlink_to("loop")
    (tmp_path / "out" / "loop").symlink_to("a_x4.png")
    proc = _lwayrt("upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "-m", "realesr-animevideov3")
    name = str(tmp_path / "out" / "a_x4.png")  # shown shortened past 80 characters (pytest-xdist's paths are longer)
    shown = name if len(name) <= 80 else f"{name[:40]}...{name[-30:]} ({len(name)} characters)"
    assert proc.returncode == 1 and proc.stderr == f"error: {shown} is a symbolic link that loops: mend or remove " \
        "the link\n", proc.stderr


def test_a_quoted_home_folder_is_the_home_folder_in_every_path_option(tmp_path, monkeypatch):
    """'~' quoted, or after --opt= (where the shell leaves it), was the home folder for upscale but a folder named
    '~' in the current one for adapt -o, serve-bench --json and eval-degae --json."""
    from lway_rt.cli import main

    monkeypatch.setenv("HOME", str(tmp_path))
    for command, args, param in (("adapt", ["x", "-m", "m", "-o", "~/run"], "out_dir"),
                                 ("serve-bench", ["--json", "~/sb.json"], "json_path"),
                                 ("eval-degae", ["--json", "~/r.json"], "json_path"),
                                 ("export", ["-o", "~/engines"], "out_dir")):
        ctx = main.get_command(None, command).make_context(command, list(args))  # (click empties the list)
        assert str(ctx.params[param]) == str(tmp_path / args[-1][2:]), (command, ctx.params[param])


def test_a_trailing_slash_names_a_folder(tmp_path):
    """pathlib drops a trailing '/': 'photo.png/' was upscaled as photo.png (the system says "Not a directory"), and
    eval-degae --json 'r dir/' wrote a file named 'r dir'. Each is one usage line; a folder's slash still works."""
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    a = str(tmp_path / "a.png")
    for args, message in (
            (["upscale", a + "/", "-o", str(tmp_path / "o")], f"{a}/ ends in /, but {a} is a file, not a folder: drop the /"),
            (["eval-degae", "--json", str(tmp_path / "r dir") + "/"], f"{tmp_path / 'r dir'}/ ends in /, which names a "
                                                                      "folder: name a file")):
        proc = _lwayrt(*args)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "r dir").exists() and not (tmp_path / "o").exists()
    proc = _lwayrt("upscale", str(tmp_path) + "/", "-o", str(tmp_path / "o") + "/", "-m", "realesr-animevideov3", "-q")
    assert proc.returncode == 0 and (tmp_path / "o" / "a_x4.png").is_file(), proc.stderr


def test_output_on_a_full_disk_is_a_line_not_a_traceback(tmp_path):
    """'lwayrt models list --json > /dev/full' (standard output on a full disk) ended in a traceback."""
    with open("/dev/full", "w") as full:  # (Linux's device whose writes fail for want of room)
        proc = subprocess.run([sys.executable, "-c", _ENTRY, "models", "list", "--json"], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr == "error: cannot write the output (No space left on device): make " \
        "room where it goes, or send it elsewhere\n", proc.stderr


def test_a_table_into_a_closed_pipe_is_said_as_any_output_is(tmp_path):
    """rich handles a closed pipe itself, ending the run with status 1 and no word ('lwayrt models list | head -0');
    the tables now stop as any output does: a line and status 141."""
    proc = subprocess.Popen([sys.executable, "-c", _ENTRY, "models", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "100"})
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and err.startswith("stopped: the program reading lwayrt's output ended"), err


def test_a_closed_pipe_stops_the_run_with_a_line_and_status_141(tmp_path):
    """'lwayrt adapt ... | head -1': click ended the run with status 1 and no word once the reader was gone. It says
    why on standard error and ends as a shell reports a program stopped by a closed pipe."""
    import numpy as np
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(frames / f"{i}.png")
    proc = subprocess.Popen([sys.executable, "-c", _ENTRY, "adapt", str(frames), "-m", "realesr-animevideov3", "-o",
                             str(tmp_path / "run"), "--iterations", "3", "--patch-size", "32", "--batch-size", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # as head does after its line (adapt's progress goes to stderr: its result line comes last)
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and "iteration" in err, err
    assert err.endswith("stopped: the program reading lwayrt's output ended (a pipe such as '| head'); send the output "
                        "to a file (> log.txt) to keep a long run going\n") and "Traceback" not in err, err


def test_a_name_that_is_not_utf8_is_said_as_its_bytes(tmp_path):
    """A failed input named bad\\xff.png was listed on standard error as bad\\udcff.png (stderr's backslashreplace),
    a name matching no file (review 48C C7); it is written as the bytes it is, as standard output writes names."""
    name = os.fsdecode(b"bad\xff.png")
    (tmp_path / name).write_text("not an image")
    proc = subprocess.run([sys.executable, "-c", _ENTRY, "upscale", str(tmp_path / name), "-o", str(tmp_path / "o")],
                          capture_output=True, timeout=120)
    assert proc.returncode == 1 and b"bad\xff.png is not a readable image" in proc.stderr, proc.stderr
    assert b"udcff" not in proc.stderr


def test_a_stream_that_is_not_utf8_keeps_its_own_error_handler(tmp_path):
    """Standard error on another encoding (cp1252, as a redirected one on Windows) was switched to surrogateescape too:
    a name with a character it cannot hold lost the error line in a traceback (review 48G G1, of the C7 change)."""
    env = {**os.environ, "PYTHONIOENCODING": "cp1252"}
    proc = subprocess.run([sys.executable, "-c", _ENTRY, "upscale", str(tmp_path / "x\u2192y.png"), "-o",
                           str(tmp_path / "o")], capture_output=True, timeout=120, env=env)
    assert proc.returncode == 1 and b"Traceback" not in proc.stderr and b"does not exist" in proc.stderr, proc.stderr


@pytest.mark.parametrize("command", [["upscale", "x", "-o", "y"], ["upscale-video", "x.mp4", "-o", "y"],
                                     ["adapt", "x", "-m", "m", "-o", "a"], ["train-degae"], ["eval-degae"]])
def test_a_misspelt_device_is_a_usage_error_in_every_command(command):
    """`--device gpu` was a refusal with status 1 in four commands and a usage error (2) in serve-bench (56C-3)."""
    from click.testing import CliRunner

    from lway_rt.cli import main

    res = CliRunner().invoke(main, [*command, "--device", "gpu"])
    assert res.exit_code == 2 and "must be 'cpu' or 'cuda[:N]', not 'gpu'" in res.output, res.output
    name = main.get_command(None, command[0])
    assert name.make_context(command[0], [*command[1:], "--device", "cuda:1"]).params["device"] == "cuda:1"
