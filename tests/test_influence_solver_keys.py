"""A solver's settings are exactly its own fields: only they enter the IF method's store key."""

from __future__ import annotations

import pytest

from eif.influence.solvers import ConjugateGradients, Lissa
from eif.methods.influence_function import InfluenceFunction
from eif.settings import keyed


def test_a_solver_keys_only_its_own_settings() -> None:
    cg = InfluenceFunction(solver=ConjugateGradients(damping=5.0, tol=1e-3, coarse=32))
    lissa = InfluenceFunction(solver=Lissa(scale=500.0, damping=0.01))
    assert set(keyed(cg)["solver"]) == {"kind", "damping", "tol", "max_iter", "coarse", "coarse_e", "deflate"}
    assert set(keyed(lissa)["solver"]) == {"kind", "scale", "damping"}  # block_size, step_threads: speed
    # a LiSSA-only setting is not a CG setting at all (and vice versa): it cannot reach the other's key
    with pytest.raises(ValueError, match="scale"):
        ConjugateGradients(damping=5.0, scale=100.0)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="tol"):
        Lissa(tol=1e-6)  # type: ignore[call-arg]
    # changing a LiSSA setting changes the LiSSA key, never the CG one
    assert keyed(lissa) != keyed(InfluenceFunction(solver=Lissa(scale=100.0, damping=0.01)))
    assert keyed(InfluenceFunction(solver=Lissa(block_size=8))) == keyed(InfluenceFunction(solver=Lissa()))
    assert keyed(cg) != keyed(InfluenceFunction(solver=ConjugateGradients(damping=5.0, tol=1e-4, coarse=32)))
