"""Running ``python -m nsp_pipeline`` in-process in tests, and reading what it printed."""

from nsp_pipeline.pipeline import cli


def run(*argv) -> int:
    """Exit status of the command line with ``argv`` (quiet; paths may be Path objects)."""
    return cli.main(["-q", *(str(arg) for arg in argv)])


def error_line(capsys) -> str:
    """The single line the CLI printed on stderr, checked to be ``error: ...`` without a traceback."""
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.endswith("\n"), err
    assert err.count("\n") == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    return err.strip()
