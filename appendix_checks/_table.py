"""The table every appendix check prints: equation, quantity, max relative error, verdict."""
from dataclasses import dataclass


@dataclass
class Row:
    """One checked equation (group): the worst relative error over its random cases."""

    equation: str
    quantity: str
    max_rel_error: float
    tolerance: float

    @property
    def passed(self):
        return bool(self.max_rel_error <= self.tolerance)


def print_table(title, rows):
    """Print ``rows`` under ``title`` and return True when every row passed."""
    width = max(len(r.quantity) for r in rows)
    print(f"\n{title}")
    print(f"{'equation':<14} {'quantity':<{width}} {'max rel. error':>14} {'tolerance':>10}  verdict")
    for r in rows:
        verdict = "pass" if r.passed else "FAIL"
        print(f"{r.equation:<14} {r.quantity:<{width}} {r.max_rel_error:>14.2e} {r.tolerance:>10.0e}  {verdict}")
    return all(r.passed for r in rows)


def worst(results):
    """Largest ``rel_error`` among gradcheck results."""
    return max(r.rel_error for r in results)
