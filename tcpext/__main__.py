"""
C{python -m tcpext}: the C{tcpext} command (see L{tcpext._cli}).
"""

from tcpext._cli import main

if __name__ == "__main__":
    main()
