"""Black-box demographic audits of any face system.

- data.py: labelled image sets (AuditImage, AuditDataset) and their readers;
- targets.py: the system under audit, used only through the Target interface
  (local engine, any Rekognition-compatible endpoint, or a CSV of predictions);
- protocols/: attributes (Gender Shades), verification (NIST 1:1), lineup (ACLU);
- report/: report.json (versioned schema), report.html, report.md.
"""
