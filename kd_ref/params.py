"""One flat parameter vector, seen as named arrays: the layout every kd_ref model uses.

Optimisers, finite differences and Hessian-vector products want the parameters as
one flat float64 vector; people and equations want named arrays (W_1, b_1, ... or
W, V, b, c). A :class:`ParamLayout` lists the named blocks in order, and
:meth:`ParamLayout.views` cuts any flat vector laid out that way (the parameters
themselves, a gradient, a direction) into reshaped *views*: writing into a view
writes into the flat vector, and nothing is copied.

Examples
--------
>>> import numpy as np
>>> layout = ParamLayout([("W", (2, 3)), ("b", (2,))])
>>> layout.size
8
>>> flat = np.arange(8.0)
>>> W, b = layout.views(flat)
>>> W
array([[0., 1., 2.],
       [3., 4., 5.]])
>>> b[...] = -1.0
>>> flat
array([ 0.,  1.,  2.,  3.,  4.,  5., -1., -1.])
>>> layout.slice("b")
slice(6, 8, None)
"""
from math import prod

import numpy as np


class ParamLayout:
    """Named blocks, in order, of a flat parameter vector.

    Parameters
    ----------
    blocks : sequence of (str, tuple of int)
        Name and shape of each block, in the order they sit in the flat vector.
    """

    def __init__(self, blocks):
        self.names, self.shapes, self._slices = [], [], {}
        start = 0
        for name, shape in blocks:
            name, shape = str(name), tuple(int(s) for s in shape)
            if name in self._slices:
                raise ValueError(f"blocks: expected distinct names, received {name!r} twice")
            if any(s < 0 for s in shape):
                raise ValueError(f"blocks: expected non-negative sizes for {name!r}, received shape {shape}")
            self.names.append(name)
            self.shapes.append(shape)
            self._slices[name] = slice(start, start + prod(shape))
            start += prod(shape)
        self.size = start

    def _flat(self, flat):
        if not (isinstance(flat, np.ndarray) and flat.shape == (self.size,)):
            raise ValueError(f"flat: expected an ndarray of shape ({self.size},), received "
                             f"{type(flat).__name__} of shape {getattr(flat, 'shape', None)}")
        if flat.dtype.kind not in "biuf":           # views, not copies: a complex vector is refused, not cast
            raise TypeError(f"flat: expected a real array, received dtype {flat.dtype}")
        return flat

    def views(self, flat):
        """The blocks of ``flat`` as a tuple of reshaped views, in layout order."""
        flat = self._flat(flat)
        return tuple(flat[self._slices[n]].reshape(s) for n, s in zip(self.names, self.shapes))

    def named(self, flat):
        """The blocks of ``flat`` as a dict {name: view}, in layout order."""
        return dict(zip(self.names, self.views(flat)))

    def slice(self, name):
        """The slice of the flat vector that holds block ``name``."""
        if name not in self._slices:
            raise ValueError(f"name: expected one of {self.names}, received {name!r}")
        return self._slices[name]

    def zeros(self):
        """A new flat float64 vector of zeros with this layout."""
        return np.zeros(self.size)

    def __repr__(self):
        return "ParamLayout(" + ", ".join(f"{n}{list(s)}" for n, s in zip(self.names, self.shapes)) + ")"
