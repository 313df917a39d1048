"""The paper's tables, in one package: Table 1 (:mod:`eif.tables.table1`, statistics and layout),
Tables 2 and 3 (:mod:`eif.tables.mislabel`), what sweeps share (:mod:`eif.tables.sweep`) and the
formatting every table uses (:mod:`eif.tables.format`)."""
