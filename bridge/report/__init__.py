"""Reports of a run: the report as data and its one writer of report.json and report.md (`writer`), report.html
with its SVG plots (`html`), JUnit XML (`junit`), shared number formatting (`formatting`) and the component
versions every report records (`versions`)."""
