"""The three audit protocols. Each returns the report of docs/audit-report-schema.md
without command, created and software, which ``finish_report`` adds.

- run_attributes: Gender Shades (detection failures, gender and age errors by group);
- run_verification: NIST FRVT 1:1 (false match / false non-match rates, DET curves);
- run_lineup: the ACLU's lineup (people not in a gallery matched to someone in it).
"""

from faceaudit.audit.protocols.attributes import run_attributes
from faceaudit.audit.protocols.common import finish_report
from faceaudit.audit.protocols.lineup import run_lineup
from faceaudit.audit.protocols.verification import run_verification

__all__ = ["finish_report", "run_attributes", "run_lineup",
           "run_verification"]
