"""``rift_losses.integrations`` in a source checkout (never part of a built wheel).

The adapters live in the project's top-level ``integrations/`` folder. A built wheel maps that
folder to ``rift_losses/integrations`` (pyproject.toml's ``package-dir``) and does not contain
this file. In the source tree (an editable install made with a path entry, as ``make`` does,
or the checkout itself on ``sys.path``) this stand-in points the package's ``__path__`` at the
folder and runs the folder's ``__init__.py``, so both give the same package.
"""

import os as _os

_checkout = _os.path.dirname(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))))
__path__ = [_os.path.join(_checkout, "integrations")]
_init = _os.path.join(__path__[0], "__init__.py")
with open(_init, encoding="utf-8") as _source:
    exec(compile(_source.read(), _init, "exec"))
del _checkout, _init, _source
