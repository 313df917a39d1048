"""Mislabel detection, relabel recommendation (Algorithm 1) and the field study (Table 5)."""
