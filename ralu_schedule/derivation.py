"""Symbolic derivation of the re-injection coefficients (sympy).

Nothing here runs during sampling or on the command line's solve path: sympy is imported
only when :func:`derive` is called. The derivation works in the algebra spanned by the
identity ``I`` and the all-ones matrix ``J`` of one upsampled block of ``n`` values
(``U U^T`` restricted to a block is ``J``; ``J^2 = n J``), so ``n`` stays a symbol.

Unknowns ``s, a, b`` (and ``beta`` of the O(n) noise sampler) are fixed by

1. mean:        ``a e = s``                            (``E[x_s | x1] = s U x1``)
2. covariance:  ``a^2 (1-e)^2 J + b^2 (I - c J) = (1-s)^2 I``

and, because ``I`` and ``J`` are linearly independent for ``n >= 2``, (2) splits into its
``I`` and ``J`` coefficients. Positive roots are taken (``0 < e < 1``, ``0 < c``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Derivation:
    """The result of :func:`derive`: the equations, the solution and its validity condition."""

    symbols: dict
    equations: list
    solution: dict          # {"s": expr, "a": expr, "b": expr, "beta": expr}
    validity: object        # condition on c for I - c J to be a covariance
    block_size: object      # n (a symbol or an int)
    _funcs: dict = field(default_factory=dict, repr=False, compare=False)

    def __str__(self) -> str:  # a readable transcript: conditions, solution, validity
        import sympy as sp

        lines = [f"block size n = {self.block_size}", "conditions:"]
        lines += [f"  {sp.sstr(eq.lhs)} = {sp.sstr(eq.rhs)}" for eq in self.equations]
        lines.append("solution:")
        lines += [f"  {k} = {sp.sstr(v)}" for k, v in self.solution.items()]
        lines.append(f"valid for: {sp.sstr(self.validity)}")
        return "\n".join(lines)

    def latex(self) -> str:
        """The equations and the solution as a LaTeX ``align`` block."""
        import sympy as sp

        rows = [f"{sp.latex(eq.lhs)} &= {sp.latex(eq.rhs)}" for eq in self.equations]
        rows += [f"{sp.latex(self.symbols[k])} &= {sp.latex(v)}" for k, v in self.solution.items()]
        rows.append(r"\text{valid for } & " + sp.latex(self.validity))
        return "\\begin{align}\n" + " \\\\\n".join(rows) + "\n\\end{align}"

    def numeric(self, name: str):
        """A numpy function of ``(e, c)`` (``(c,)`` plus ``n`` for ``beta``), lambdified once."""
        import sympy as sp

        if name not in self._funcs:
            expr = self.solution[name]
            e, c, n = self.symbols["e"], self.symbols["c"], self.symbols["n"]
            args = (e, c, n) if name == "beta" else (e, c)
            self._funcs[name] = sp.lambdify(args, expr, "numpy")
        return self._funcs[name]


def derive(block_size: int | None = None) -> Derivation:
    """Derive ``s, a, b`` and the noise factor ``beta`` for blocks of ``n`` values.

    ``block_size=None`` keeps ``n`` symbolic and works in the ``{I, J}`` basis; an integer
    ``n >= 2`` writes the ``n x n`` covariance out entry by entry. ``n = 1`` (tokens left at
    their resolution, ``U = I``) has one covariance equation for two unknowns and is not a
    derivation: :func:`kept_token_residual` checks the upsampled blocks' solution there.
    """
    import sympy as sp

    if block_size is not None and (isinstance(block_size, bool) or int(block_size) != block_size
                                   or block_size < 2):
        raise ValueError(f"block_size must be None or an integer >= 2, got {block_size!r}")
    e, c, s, a, b, beta = sp.symbols("e c s a b beta", positive=True)
    r = sp.Symbol("r", positive=True)  # sqrt(c): keeps the roots free of radicals
    n_sym = sp.Symbol("n", positive=True, integer=True)
    n = n_sym if block_size is None else sp.Integer(int(block_size))
    symbols = {"e": e, "c": c, "s": s, "a": a, "b": b, "beta": beta, "n": n_sym}

    mean = sp.Eq(a * e, s)
    if block_size is None:
        # a^2(1-e)^2 J + b^2 (I - c J) = (1-s)^2 I, coefficient by coefficient.
        cov = [sp.Eq(b**2, (1 - s) ** 2), sp.Eq(a**2 * (1 - e) ** 2 - c * b**2, 0)]
    else:
        J, I = sp.ones(int(n)), sp.eye(int(n))
        residual = a**2 * (1 - e) ** 2 * J + b**2 * (I - c * J) - (1 - s) ** 2 * I
        cov = [sp.Eq(sp.expand(x), 0) for x in sorted(set(residual), key=sp.default_sort_key)]
    equations = [mean, *cov]

    candidates = sp.solve([eq.subs(c, r**2) for eq in equations], [s, a, b], dict=True)
    admissible = [sol for sol in candidates if _admissible(sol, s, a, b, e, r)]
    if len(admissible) != 1:
        raise RuntimeError(f"expected one admissible solution, got {candidates}")
    sol = {k.name: sp.factor(sp.cancel(v)).subs(r, sp.sqrt(c)) for k, v in admissible[0].items()}
    sol = {k: sol[k] for k in ("s", "a", "b")}

    # beta: (I - beta J)(I - beta J)^T = I - (2 beta - n beta^2) J must equal I - c J;
    # take the root that vanishes with c (no correlation, no correction).
    roots = sp.solve(sp.Eq(2 * beta - n * beta**2, c), beta)
    sol["beta"] = sp.simplify([r for r in roots if sp.limit(r, c, 0) == 0][0])

    validity = sp.Le(c, 1 / n)  # eigenvalues of I - c J: 1 (n-1 times) and 1 - n c
    return Derivation(symbols=symbols, equations=equations, solution=sol,
                      validity=validity, block_size=n)


def kept_token_residual(derivation: Derivation):
    """``Var(x_s) - (1-s)^2`` for a token left at its resolution (``U = I``, noise variance
    ``1 - c``) under the derived ``s, a, b``; it simplifies to 0."""
    import sympy as sp

    sym, sol = derivation.symbols, derivation.solution
    e, c = sym["e"], sym["c"]
    var = sol["a"] ** 2 * (1 - e) ** 2 + sol["b"] ** 2 * (1 - c)
    return sp.simplify(var - (1 - sol["s"]) ** 2)


def in_delta_form(derivation: Derivation) -> dict:
    """The solution written with ``delta = (1 - e) / sqrt(c)``, as the paper writes it."""
    import sympy as sp

    e, c = derivation.symbols["e"], derivation.symbols["c"]
    delta = sp.Symbol("delta", positive=True)
    return {k: sp.simplify(v.subs(sp.sqrt(c), (1 - e) / delta))
            for k, v in derivation.solution.items() if k in ("s", "a", "b")}


def _admissible(sol, s, a, b, e, r) -> bool:
    """Positive ``a, b`` and ``0 < s < 1`` at probe points covering small and large ``e``."""
    import sympy as sp

    for ev, rv in [(sp.Rational(1, 5), sp.Rational(1, 5)), (sp.Rational(9, 10), sp.Rational(1, 2)),
                   (sp.Rational(1, 2), sp.Rational(1, 10))]:
        val = {k: v.subs({e: ev, r: rv}) for k, v in sol.items()}
        if not (val[a] > 0 and val[b] > 0 and 0 < val[s] < 1):
            return False
    return True
