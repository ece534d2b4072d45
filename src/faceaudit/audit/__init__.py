"""Black-box demographic audits of any face system.

- datasets come from faceaudit.datasets (labelled image sets and their readers,
  shared with training); pairs.py forms a dataset's genuine/impostor pairs;
- targets/: the system under audit, used only through the Target interface
  (local engine, any Rekognition-compatible endpoint, or a CSV of predictions);
- protocols/: attributes (Gender Shades), verification (NIST 1:1), lineup (ACLU);
- metrics.py: metric and gap rows from measured numbers; words.py: how numbers and
  gaps read, in report.json's sentences and in the rendered reports alike;
- report/: report.json (versioned schema), report.html, report.md;
- run.py: one audit from start to finish (the CLI's entry point).
"""
