"""The C kernels (``kvtool/kernels.c``), compiled when kvtool is installed; the rest of
the project's metadata is in pyproject.toml. Without a C compiler the install still succeeds
(``optional``): kvtool then runs its Python engine and says so (``kvtool.native``)."""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class BuildExt(build_ext):
    """``-O3``, and no fused multiply-adds: the kernels' floats must equal the Python engine's."""

    def build_extensions(self) -> None:
        if self.compiler.compiler_type == "unix":
            for ext in self.extensions:
                ext.extra_compile_args += ["-O3", "-ffp-contract=off"]
        super().build_extensions()


setup(
    ext_modules=[Extension("kvtool._kernels", ["kvtool/kernels.c"], optional=True)],
    cmdclass={"build_ext": BuildExt},
)
