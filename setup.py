"""Ships ``rift_losses.pth`` at the root of site-packages, for regular and editable installs.

Everything else is in pyproject.toml. The .pth line imports ``_rift_losses_hook``, which
costs well under a millisecond and imports nothing heavy (see that module).
"""

import base64
import hashlib
import os
import zipfile

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "rift_losses.pth"
HERE = os.path.dirname(os.path.abspath(__file__))


class build_py_with_pth(build_py):
    def run(self):
        super().run()
        self.copy_file(os.path.join(HERE, PTH), os.path.join(self.build_lib, PTH))

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH)]


cmdclass = {"build_py": build_py_with_pth}

try:  # setuptools >= 64: PEP 660 editable wheels do not run build_py into the wheel
    from setuptools.command.editable_wheel import editable_wheel
except ImportError:  # pragma: no cover
    pass
else:

    def _add_to_wheel(wheel_path, name, data):
        """Rewrite ``wheel_path`` with ``name`` added at its root and listed in its RECORD."""
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        with zipfile.ZipFile(wheel_path) as src:
            if name in src.namelist():
                return
        tmp = wheel_path + ".tmp"
        with zipfile.ZipFile(wheel_path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
            for item in src.infolist():
                content = src.read(item.filename)
                if item.filename.endswith(".dist-info/RECORD"):
                    content += f"{name},sha256={digest},{len(data)}\n".encode()
                dst.writestr(item, content)
            dst.writestr(name, data)
        os.replace(tmp, wheel_path)

    class editable_wheel_with_pth(editable_wheel):
        def run(self):
            super().run()
            with open(os.path.join(HERE, PTH), "rb") as f:
                data = f.read()
            for name in os.listdir(self.dist_dir):
                if name.endswith(".whl"):
                    _add_to_wheel(os.path.join(self.dist_dir, name), PTH, data)

    cmdclass["editable_wheel"] = editable_wheel_with_pth

setup(cmdclass=cmdclass)
