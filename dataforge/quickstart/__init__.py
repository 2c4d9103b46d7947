"""`dataforge quickstart`: build, self-instruct, two tunes, eval, compare and report on the tiny model.

    from dataforge.quickstart import run_quickstart
    result = run_quickstart(Path("quickstart"), size="full")
    result.report_html, result.summary["tunes"]["domain-only"]["domain"]
"""

from dataforge.quickstart.config import QuickstartConfig, quickstart_config
from dataforge.quickstart.run import QuickstartResult, run_quickstart

__all__ = ["QuickstartConfig", "QuickstartResult", "quickstart_config", "run_quickstart"]
