"""The shared leaves at the bottom of the package table, which every other package may import and which
import none of them: `console` (progress bars, quiet third-party logging), `write_errors` (full disks and
read-only folders named) and `atomic` (the one temporary-file-then-rename write)."""
