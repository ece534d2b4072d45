"""The system under audit, used only through the Target interface.

- base.py: Target and its answers (Detection, Match) -- what every implementation imports;
- open.py: open_target(spec) -- local, rekognition://HOST:PORT, rekognition://aws, csv:FILE;
- rekognition.py: RekognitionTarget, the questions asked as Rekognition operations;
  transport.py: jobs and backends (botocore threads); local.py: the engine in worker
  processes (pool.py: forkserver workers, a fresh pool when one breaks);
  runs.py + cache.py: what is cached so an interrupted audit resumes; progress.py;
- csv_predictions.py: CsvTarget, predictions exported from another system.
"""

from faceaudit.audit.targets.base import Detection, Match, Target
from faceaudit.audit.targets.open import open_target

__all__ = ["Detection", "Match", "Target", "open_target"]
