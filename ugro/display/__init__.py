"""Everything ugro draws with rich: the consoles and shared formats (console), live progress
(progress), tables about the nodes (nodes) and about jobs (jobs). Only the commands import it."""
