"""Node health: a probe's report turned into a verdict, and drift (verdicts); the daemon's light
probes and their history (monitor); the daemon's fresh reports as a launch's preflight
(fresh_reports)."""
