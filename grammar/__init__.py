"""The Lark grammars of layerbuild, shipped inside the wheel as the package `layerbuild.grammar`."""
