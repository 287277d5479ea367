"""The local stack's parts, one module per service (see scripts/stack/stack.py for the command line).

Standard library only: the stack starts before the project's virtualenv exists.
"""
