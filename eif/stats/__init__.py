"""Table 1 statistics: paired t-tests on confusion pairs, Wilcoxon signed-rank tests on groups."""
