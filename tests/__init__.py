"""
The tcpext test suite, run with C{python -m twisted.trial tests}.
"""
