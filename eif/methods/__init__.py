"""Attribution methods, one module each, behind the contract of :mod:`eif.methods.base`: a method's
settings class (selected by ``_target_`` in ``conf/methods/<name>.yaml``) scores every training sample
for a batch of confusions, positive = harmful."""
