"""python -m tierscale_operator.uninstall, the chart's pre-delete hook (the cluster tests run it for real)."""

from __future__ import annotations

import kopf
import pytest

from tierscale_operator import handlers, uninstall


def test_finalizer_is_the_operators():
    settings = kopf.OperatorSettings()

    handlers.configure(settings=settings)

    assert settings.persistence.finalizer == uninstall.FINALIZER


def test_release_after_beyond_timeout_is_rejected(capsys):
    with pytest.raises(SystemExit) as exit_info:
        uninstall.main(["--timeout", "10", "--release-after", "20"])

    assert exit_info.value.code == 2
    assert "--release-after=20 must not exceed --timeout=10" in capsys.readouterr().err
