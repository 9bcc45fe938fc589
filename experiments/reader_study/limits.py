"""What the reader server takes from a browser: the pseudonym form, how many new pseudonyms, how
large a body, how long a read (standard library only: the command line reads these too)."""
import re

PSEUDONYM = re.compile(r"[A-Za-z0-9_-]{1,40}")
MAX_NEW_READERS = 50  # new pseudonyms (no answers yet) a server takes without a --readers list
MAX_BODY = 1024  # bytes of a POST body: the largest answer is about 150
READ_TIMEOUT = 10.0  # seconds any one read of a connection may wait (an idle connection is closed)
