"""Build pho's compiled kernels.

Everything declarative lives in pyproject.toml; this file only describes the Cython extension
and its compiler flags, and maps the top-level ``tables/`` folder into the package as
``pho.tables`` so the shipped lookup tables install with pho.

Environment switches
--------------------
PHO_PORTABLE=1
    Do not add ``-march=native`` (use it when building wheels on one machine for others).
PHO_NO_OPENMP=1
    Build without OpenMP even where the compiler supports it (the kernels then run serially).
"""

import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def _compiler_accepts(compiler_cmd, flags, source="int main(void){return 0;}\n"):
    """True if the C compiler builds a small program with these flags."""
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(source)
        cmd = list(compiler_cmd) + [src, "-o", os.path.join(tmp, "probe")] + list(flags)
        return subprocess.run(cmd, capture_output=True).returncode == 0
    except OSError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


OPENMP_PROBE = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"


class BuildExtWithFlags(build_ext):
    """Add OpenMP and optimization flags that the compiler actually accepts."""

    def build_extensions(self):
        compiler_cmd = getattr(self.compiler, "compiler_so", None) or ["cc"]
        compiler_cmd = [compiler_cmd[0]]
        is_msvc = self.compiler.compiler_type == "msvc"
        compile_flags, link_flags = [], []
        if is_msvc:
            compile_flags += ["/O2"]
            if not os.environ.get("PHO_NO_OPENMP"):
                compile_flags += ["/openmp"]
            self._openmp = not os.environ.get("PHO_NO_OPENMP")
        else:
            compile_flags += ["-O3", "-fno-math-errno", "-fno-trapping-math"]
            if not os.environ.get("PHO_PORTABLE") and _compiler_accepts(compiler_cmd, ["-march=native"]):
                compile_flags.append("-march=native")
            self._openmp = False
            if not os.environ.get("PHO_NO_OPENMP") and _compiler_accepts(compiler_cmd, ["-fopenmp"], OPENMP_PROBE):
                compile_flags.append("-fopenmp")
                link_flags.append("-fopenmp")
                self._openmp = True
            simd_macros = []
            if not self._openmp:
                print("pho: building WITHOUT OpenMP; the compiled kernels will run on one thread", file=sys.stderr)
                # still let "#pragma omp simd" vectorize the kernel's sums where the compiler allows it
                if _compiler_accepts(compiler_cmd, ["-fopenmp-simd"]):
                    compile_flags.append("-fopenmp-simd")
                    simd_macros.append(("PHO_OPENMP_SIMD", "1"))
        for ext in self.extensions:
            ext.extra_compile_args = list(ext.extra_compile_args) + compile_flags
            ext.extra_link_args = list(ext.extra_link_args) + link_flags
            ext.define_macros = list(ext.define_macros) + [("PHO_HAVE_OPENMP", "1" if self._openmp else "0")]
            if not is_msvc:
                ext.define_macros += simd_macros
        super().build_extensions()


extensions = [
    Extension(
        "pho._render",
        ["pho/_render.pyx"],
        include_dirs=[np.get_include(), os.path.join("pho", "include")],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
    Extension(
        "pho._stamp",
        ["pho/_stamp.pyx"],
        include_dirs=[np.get_include(), os.path.join("pho", "include")],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
]

setup(
    packages=["pho", "pho.tools", "pho.field", "pho.tables"],
    package_dir={"pho": "pho", "pho.tools": "pho/tools", "pho.tables": "tables"},
    package_data={"pho": ["include/*.h", "*.pyx", "*.pxd", "data/*.fits", "data/README.md"], "pho.tables": ["*.fits", "*.npz", "*.json"]},
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False, "cdivision": True},
    ),
    cmdclass={"build_ext": BuildExtWithFlags},
    zip_safe=False,
)
