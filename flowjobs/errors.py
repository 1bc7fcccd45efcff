"""flowjobs' exceptions at their public path (``from flowjobs.errors import RunCancelled``); they live
in the core, ``flowjobs.core.errors``."""

from flowjobs.core.errors import *  # noqa: F403  # every exception, at its public path
