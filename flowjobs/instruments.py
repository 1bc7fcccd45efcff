"""Per-process figures of a worker (``flowjobs worker --metrics-port``): the hooks the engine, the
lease keeper and the duties call. They do nothing until ``flowjobs.metrics.serve_process_metrics``
installs the Prometheus ones, so a process without a metrics port pays one method call."""

from __future__ import annotations


class Instruments:
    """What a worker process measures; this base records nothing."""

    def step_executed(self, flow: str, outcome: str) -> None:
        """An attempt executed in this process ended with ``outcome`` (its step status)."""

    def handler_ran(self, flow: str, seconds: float) -> None:
        """A step handler returned or raised after ``seconds``."""

    def leases_renewed(self, renewed: int, lost: int) -> None:
        """One renewal round: leases extended, and leases found no longer held."""

    def duty_ran(self, duty: str, *, failed: bool) -> None:
        """A duty's pass ended (``failed``: it raised)."""


_installed = Instruments()


def instruments() -> Instruments:
    """This process's instruments."""
    return _installed


def install_instruments(installed: Instruments) -> None:
    """Make ``installed`` this process's instruments (forked work-horses inherit them)."""
    global _installed
    _installed = installed
