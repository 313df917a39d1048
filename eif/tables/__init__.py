"""The paper's tables, in one package: Table 1 (:mod:`eif.tables.table1`, statistics and layout) and
its robustness table (:mod:`eif.tables.robustness`), the attribution benchmark (:mod:`eif.tables.lds`)
and cleaning (:mod:`eif.tables.clean`) across seeds, Tables 2 and 3 (:mod:`eif.tables.mislabel`), the
statistics they share (:mod:`eif.tables.seedstats`: within one model and at seed level), what sweeps
share (:mod:`eif.tables.sweep`) and the formatting every table uses (:mod:`eif.tables.format`)."""
