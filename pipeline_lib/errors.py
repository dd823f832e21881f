"""The one error type the library raises on purpose.

Every error the pipeline raises deliberately (a bad setting, a message that breaks its contract,
a missing Delta table, a delivery that failed, a resolve without a note, ...) is a PipelineError
whose message says what was wrong, where, and what to do. The CLI and the job entry points catch
PipelineError and print that message as one `error:` line, without a traceback; anything else is
a bug and keeps its traceback.

Subclasses live beside the code that raises them (config.ConfigError, contracts.ContractError,
spark.tables.TableMissing, ...). Several also derive from ValueError or RuntimeError, so callers
that catch those keep working.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the library raises on purpose; the message names the fix.

    `exit_code` is the status the CLI exits with: 2 for a usage or configuration mistake the
    user can fix in the command, 1 for a failure of the environment (broker, Java, a table).
    """

    exit_code: int = 1
