"""Parity as data: the metrics and verdicts (`metrics`), the parity data stored in an output folder (`store`) and
`bridge parity`'s re-check of a folder (`recheck`)."""
