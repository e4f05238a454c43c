"""Names of the files a study writes that other modules of the study read back, in one place.

(The names a study shares with serve, whose code may not import the study, are mtlmood.filenames.)
"""

from __future__ import annotations

# The study's resolved config, in its run directory (written when the study starts).
STUDY_CONFIG_FILE = "study_config.yaml"
# The report's α-response table (study.report.writer), in the report directory.
CURVES_FILE = "curves.csv"
