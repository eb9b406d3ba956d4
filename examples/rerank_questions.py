"""The demo reranker's question sets: natural how-to questions, typed as a user would, with the
sources of the passages that answer them in the demo corpus.

Written before any reranker was built or trained, and split once at random
(``random.Random(13)`` over the 99 questions written: 40 for development, 59 held out):

- ``DEV_QUESTIONS`` chose the reranker's recipe (``scripts/build_reranker.py --sweep dev``; the
  cross-encoder trials before it, ``--trial`` of the former ``distill_reranker.py``, too);
- ``HELDOUT_QUESTIONS`` played no part in building the reranker or choosing its recipe.

Written later, each before any reranker was scored on it, about objects no earlier question
answers: ``DEV2_QUESTIONS`` (60 more development questions, with ``DEV_QUESTIONS`` the 100 the
current recipe was chosen on) and ``HELDOUT2_QUESTIONS`` (73 more held-out ones, written after
that recipe was fixed; ``scripts/build_reranker.py --eval heldout2``).

The two held-out sets, 132 questions, are what the demo (``examples/rag_demo.py``), its test and
``benchmarks/RESULTS-reranker.md`` report.

No question is data for the reranker. A question counts as answered at rank r when the passage
at rank r has one of its sources.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Question:
    text: str
    answers: frozenset[str]  # sources of passages that answer it


DEV_QUESTIONS: tuple[Question, ...] = (
    Question("how do I delete a folder and everything inside it", frozenset({"shutil.rmtree"})),
    Question(
        "how do I read a whole text file into a string with pathlib",
        frozenset({"pathlib.Path.read_text"}),
    ),
    Question("how to create nested directories", frozenset({"os.makedirs", "pathlib.Path.mkdir"})),
    Question(
        "find all files matching a pattern recursively",
        frozenset({"glob.glob", "glob.iglob", "pathlib.Path.rglob"}),
    ),
    Question("convert a python dict to a json string", frozenset({"json.dumps"})),
    Question("count how often each item appears in a list", frozenset({"collections.Counter"})),
    Question(
        "get the most common elements of a list",
        frozenset({"collections.Counter.most_common"}),
    ),
    Question("a queue I can append and pop from both ends", frozenset({"collections.deque"})),
    Question(
        "fix some arguments of a function and get a new function",
        frozenset({"functools.partial"}),
    ),
    Question("get the n largest items from a list", frozenset({"heapq.nlargest"})),
    Question("cartesian product of two lists", frozenset({"itertools.product"})),
    Question(
        "iterate over consecutive pairs of items in a list",
        frozenset({"itertools.pairwise"}),
    ),
    Question("group consecutive items by a key", frozenset({"itertools.groupby"})),
    Question("greatest common divisor of two numbers", frozenset({"math.gcd"})),
    Question("compare two floats for approximate equality", frozenset({"math.isclose"})),
    Question("shuffle a list randomly", frozenset({"random.shuffle", "random.Random.shuffle"})),
    Question("get the named groups of a regex match as a dict", frozenset({"re.Match.groupdict"})),
    Question("create a zip or tar archive of a folder", frozenset({"shutil.make_archive"})),
    Question(
        "get the width of the terminal",
        frozenset({"shutil.get_terminal_size", "os.terminal_size"}),
    ),
    Question(
        "kill a subprocess that I started",
        frozenset({"subprocess.Popen.kill", "subprocess.Popen.terminate"}),
    ),
    Question(
        "list the names of the files in a zip",
        frozenset(
            {"zipfile.ZipFile.namelist", "zipfile.ZipFile.infolist", "zipfile.ZipFile.printdir"}
        ),
    ),
    Question(
        "wrap a long paragraph to 80 columns",
        frozenset(
            {
                "textwrap.fill",
                "textwrap.wrap",
                "textwrap.TextWrapper.fill",
                "textwrap.TextWrapper.wrap",
            }
        ),
    ),
    Question(
        "run a function after a delay in a background thread",
        frozenset({"threading.Timer"}),
    ),
    Question("wait for a thread to finish", frozenset({"threading.Thread.join"})),
    Question(
        "measure elapsed time precisely",
        frozenset({"time.perf_counter", "time.perf_counter_ns", "time.monotonic"}),
    ),
    Question(
        "get the query parameters from a URL as a dict",
        frozenset({"urllib.parse.parse_qs"}),
    ),
    Question(
        "compute an HMAC signature of a message",
        frozenset({"hmac.new", "hmac.digest", "hmac.HMAC"}),
    ),
    Question("find strings that are similar to a word", frozenset({"difflib.get_close_matches"})),
    Question("log messages to a file", frozenset({"logging.FileHandler", "logging.basicConfig"})),
    Question("change the logging level of a logger", frozenset({"logging.Logger.setLevel"})),
    Question("parse command line arguments", frozenset({"argparse.ArgumentParser", "argparse"})),
    Question(
        "decode a base64 string",
        frozenset({"base64.b64decode", "base64.standard_b64decode"}),
    ),
    Question("url-safe base64 encoding", frozenset({"base64.urlsafe_b64encode"})),
    Question("make a uuid from a name", frozenset({"uuid.uuid5", "uuid.uuid3"})),
    Question(
        "get the user's home directory",
        frozenset({"os.path.expanduser", "pathlib.Path.expanduser"}),
    ),
    Question(
        "make a path absolute",
        frozenset(
            {"os.path.abspath", "pathlib.Path.absolute", "pathlib.Path.resolve", "os.path.realpath"}
        ),
    ),
    Question(
        "make threads wait until all of them reach the same point",
        frozenset({"threading.Barrier", "threading.Barrier.wait"}),
    ),
    Question(
        "move a key to the end of an ordered dict",
        frozenset({"collections.OrderedDict.move_to_end"}),
    ),
    Question("get the ISO week number of a date", frozenset({"datetime.date.isocalendar"})),
    Question("change the extension of a path", frozenset({"pathlib.PurePath.with_suffix"})),
)

HELDOUT_QUESTIONS: tuple[Question, ...] = (
    Question("how to get the file extension from a filename", frozenset({"os.path.splitext"})),
    Question(
        "check if a file exists",
        frozenset({"pathlib.Path.exists", "pathlib.Path.is_file", "os.path.lexists"}),
    ),
    Question("read json from a file", frozenset({"json.load"})),
    Question("how do I get the current date and time", frozenset({"datetime.datetime.now"})),
    Question(
        "format a datetime as a string",
        frozenset({"datetime.date.strftime", "time.strftime"}),
    ),
    Question(
        "how many seconds are in a timedelta",
        frozenset({"datetime.timedelta.total_seconds"}),
    ),
    Question("check if a year is a leap year", frozenset({"calendar.isleap"})),
    Question("how many days are in a given month", frozenset({"calendar.monthrange"})),
    Question(
        "dictionary with a default value for missing keys",
        frozenset({"collections.defaultdict"}),
    ),
    Question(
        "create a simple class with named fields like a tuple",
        frozenset({"collections.namedtuple"}),
    ),
    Question(
        "cache the results of an expensive function",
        frozenset({"functools.lru_cache", "functools.cache"}),
    ),
    Question(
        "keep the name and docstring of the wrapped function in my decorator",
        frozenset({"functools.wraps", "functools.update_wrapper"}),
    ),
    Question("merge several sorted lists into one sorted stream", frozenset({"heapq.merge"})),
    Question("all combinations of 3 items from a list", frozenset({"itertools.combinations"})),
    Question(
        "flatten a list of lists",
        frozenset({"itertools.chain.from_iterable", "itertools.chain"}),
    ),
    Question("take the first 5 items of an iterator", frozenset({"itertools.islice"})),
    Question("round a number down to an integer", frozenset({"math.floor"})),
    Question("how do I check whether a value is NaN", frozenset({"math.isnan"})),
    Question("number of ways to choose k items from n", frozenset({"math.comb"})),
    Question("compute the median of a list of numbers", frozenset({"statistics.median"})),
    Question("standard deviation of a sample", frozenset({"statistics.stdev"})),
    Question(
        "pick several random items without repeats",
        frozenset({"random.sample", "random.Random.sample"}),
    ),
    Question(
        "generate a random integer between 1 and 10",
        frozenset(
            {
                "random.randint",
                "random.Random.randint",
                "random.randrange",
                "random.Random.randrange",
            }
        ),
    ),
    Question(
        "make a secure random token for a password reset link",
        frozenset({"secrets.token_urlsafe", "secrets.token_hex"}),
    ),
    Question(
        "how do I escape special characters in a regular expression",
        frozenset({"re.escape"}),
    ),
    Question("split a string on a regex", frozenset({"re.split", "re.Pattern.split"})),
    Question(
        "split a command line string into arguments like the shell does",
        frozenset({"shlex.split"}),
    ),
    Question("find where an executable is on the PATH", frozenset({"shutil.which"})),
    Question("copy a whole directory with its contents", frozenset({"shutil.copytree"})),
    Question("move a file to another directory", frozenset({"shutil.move"})),
    Question("how much free disk space is left", frozenset({"shutil.disk_usage"})),
    Question("open a gzip compressed file", frozenset({"gzip.open", "gzip.GzipFile"})),
    Question(
        "list the files inside a tar archive",
        frozenset(
            {"tarfile.TarFile.getnames", "tarfile.TarFile.getmembers", "tarfile.TarFile.list"}
        ),
    ),
    Question(
        "create a temporary file that is deleted automatically",
        frozenset({"tempfile.NamedTemporaryFile", "tempfile.TemporaryFile"}),
    ),
    Question(
        "remove common leading whitespace from a multi-line string",
        frozenset({"textwrap.dedent"}),
    ),
    Question("truncate a string to fit a width with an ellipsis", frozenset({"textwrap.shorten"})),
    Question(
        "percent-encode a string for use in a URL",
        frozenset({"urllib.parse.quote", "urllib.parse.quote_plus"}),
    ),
    Question("build a query string from a dictionary", frozenset({"urllib.parse.urlencode"})),
    Question("combine a base URL with a relative link", frozenset({"urllib.parse.urljoin"})),
    Question("hash a file with sha256", frozenset({"hashlib.file_digest"})),
    Question(
        "show the differences between two files as a unified diff",
        frozenset({"difflib.unified_diff"}),
    ),
    Question(
        "log an exception with its traceback",
        frozenset({"logging.exception", "logging.Logger.exception"}),
    ),
    Question("detect the format of a CSV file", frozenset({"csv.Sniffer", "csv.Sniffer.sniff"})),
    Question("substitute $name variables in a string template", frozenset({"string.Template"})),
    Question("capitalize every word in a string", frozenset({"string.capwords"})),
    Question(
        "convert a unix timestamp to a datetime",
        frozenset({"datetime.datetime.fromtimestamp"}),
    ),
    Question(
        "parse an ISO 8601 date string",
        frozenset({"datetime.date.fromisoformat", "datetime.datetime.fromisoformat"}),
    ),
    Question("walk through all subdirectories of a folder", frozenset({"os.walk", "os.fwalk"})),
    Question("read an environment variable with a default value", frozenset({"os.getenv"})),
    Question(
        "relative path from one directory to another",
        frozenset({"os.path.relpath", "pathlib.PurePath.relative_to"}),
    ),
    Question("sleep for half a second", frozenset({"time.sleep"})),
    Question("insert into a sorted list and keep it sorted", frozenset({"bisect"})),
    Question(
        "signal another thread that something happened",
        frozenset({"threading.Event", "threading.Event.set", "threading.Condition.notify"}),
    ),
    Question(
        "limit how many threads can use a resource at once",
        frozenset({"threading.Semaphore", "threading.BoundedSemaphore"}),
    ),
    Question(
        "look up keys in several dicts as if they were one",
        frozenset({"collections.ChainMap"}),
    ),
    Question(
        "what day of the week was a date",
        frozenset({"datetime.date.weekday", "datetime.date.isoweekday", "calendar.weekday"}),
    ),
    Question("list the contents of a directory with pathlib", frozenset({"pathlib.Path.iterdir"})),
    Question(
        "create an empty file or update its modification time",
        frozenset({"pathlib.Path.touch"}),
    ),
    Question(
        "parse a URL into its components",
        frozenset({"urllib.parse.urlparse", "urllib.parse.urlsplit"}),
    ),
)

#: Sixty more development questions, written on 2026-12-02 before any reranker was scored on
#: them, about objects that no question above answers (so that a recipe chosen on the
#: hundred development questions learns nothing about the held-out ones). 40 questions move
#: hit@1 by 2.5 points each: too coarse to choose among recipes.
DEV2_QUESTIONS: tuple[Question, ...] = (
    Question("turn a hex string back into bytes", frozenset({"base64.b16decode"})),
    Question(
        "print the calendar of a whole year",
        frozenset({"calendar.TextCalendar.pryear", "calendar.calendar", "calendar.prcal"}),
    ),
    Question("how many leap years are between two years", frozenset({"calendar.leapdays"})),
    Question("convert a UTC time tuple to a unix timestamp", frozenset({"calendar.timegm"})),
    Question("rotate the items of a deque to the right", frozenset({"collections.deque.rotate"})),
    Question("add an item to the front of a deque", frozenset({"collections.deque.appendleft"})),
    Question(
        "subtract counts of one counter from another", frozenset({"collections.Counter.subtract"})
    ),
    Question(
        "create a dict with the same value for a list of keys in order",
        frozenset({"collections.OrderedDict.fromkeys"}),
    ),
    Question("get today's date", frozenset({"datetime.date.today"})),
    Question(
        "parse a date string with a format into a datetime",
        frozenset({"datetime.datetime.strptime", "time.strptime"}),
    ),
    Question("combine a date and a time into a datetime", frozenset({"datetime.datetime.combine"})),
    Question("represent a difference between two dates", frozenset({"datetime.timedelta"})),
    Question(
        "show the differences between two lists of lines",
        frozenset(
            {"difflib.Differ", "difflib.Differ.compare", "difflib.context_diff", "difflib.ndiff"}
        ),
    ),
    Question(
        "make an html page showing a side by side diff",
        frozenset(
            {"difflib.HtmlDiff", "difflib.HtmlDiff.make_file", "difflib.HtmlDiff.make_table"}
        ),
    ),
    Question(
        "how similar are two strings as a ratio",
        frozenset({"difflib.SequenceMatcher", "difflib.SequenceMatcher.ratio"}),
    ),
    Question(
        "find the longest common substring of two sequences",
        frozenset({"difflib.SequenceMatcher.find_longest_match"}),
    ),
    Question(
        "define all comparison methods from just __eq__ and __lt__",
        frozenset({"functools.total_ordering"}),
    ),
    Question(
        "function overloading based on the type of the first argument",
        frozenset({"functools.singledispatch"}),
    ),
    Question("escape special characters in a glob pattern", frozenset({"glob.escape"})),
    Question("compress bytes with gzip in memory", frozenset({"gzip.compress"})),
    Question("decompress gzip data", frozenset({"gzip.decompress"})),
    Question("get the n smallest items of a list", frozenset({"heapq.nsmallest"})),
    Question("running total of a list", frozenset({"itertools.accumulate"})),
    Question("all orderings of the items in a list", frozenset({"itertools.permutations"})),
    Question("repeat a sequence forever in a loop", frozenset({"itertools.cycle"})),
    Question(
        "zip two lists of different lengths filling in missing values",
        frozenset({"itertools.zip_longest"}),
    ),
    Question(
        "take items from an iterator while a condition is true", frozenset({"itertools.takewhile"})
    ),
    Question("write a python object to a file as json", frozenset({"json.dump"})),
    Question("parse a json string into a python object", frozenset({"json.loads"})),
    Question(
        "log a message with the level error", frozenset({"logging.Logger.error", "logging.error"})
    ),
    Question("get a logger by name", frozenset({"logging.Manager.getLogger", "logging.getLogger"})),
    Question("round a number up to the next integer", frozenset({"math.ceil"})),
    Question("factorial of a number", frozenset({"math.factorial"})),
    Question("least common multiple of integers", frozenset({"math.lcm"})),
    Question("euclidean distance between two points", frozenset({"math.dist", "math.hypot"})),
    Question("integer square root", frozenset({"math.isqrt"})),
    Question("sum floats accurately without losing precision", frozenset({"math.fsum"})),
    Question("product of all the numbers in a list", frozenset({"math.prod"})),
    Question("get the file name from a path string", frozenset({"os.path.basename"})),
    Question(
        "join folder and file names into a path",
        frozenset({"os.path.join", "pathlib.PurePath.joinpath"}),
    ),
    Question("expand environment variables in a string", frozenset({"os.path.expandvars"})),
    Question(
        "check whether a path is a symbolic link",
        frozenset({"os.path.islink", "pathlib.Path.is_symlink"}),
    ),
    Question("write bytes to a file with pathlib", frozenset({"pathlib.Path.write_bytes"})),
    Question(
        "pick a random element from a list", frozenset({"random.Random.choice", "random.choice"})
    ),
    Question(
        "random float between two numbers", frozenset({"random.Random.uniform", "random.uniform"})
    ),
    Question(
        "sample from a normal distribution",
        frozenset(
            {
                "random.Random.gauss",
                "random.Random.normalvariate",
                "random.gauss",
                "random.normalvariate",
                "statistics.NormalDist.samples",
            }
        ),
    ),
    Question(
        "find all matches of a regex in a string",
        frozenset({"re.Pattern.findall", "re.Pattern.finditer", "re.findall", "re.finditer"}),
    ),
    Question(
        "replace text matching a regular expression",
        frozenset({"re.Pattern.sub", "re.Pattern.subn", "re.sub", "re.subn"}),
    ),
    Question("quote a string so it is safe to use in a shell command", frozenset({"shlex.quote"})),
    Question("copy a file and keep its metadata", frozenset({"shutil.copy2", "shutil.copystat"})),
    Question(
        "extract a zip or tar archive",
        frozenset(
            {"shutil.unpack_archive", "tarfile.TarFile.extractall", "zipfile.ZipFile.extractall"}
        ),
    ),
    Question(
        "run a command and capture its output as a string",
        frozenset(
            {
                "subprocess.check_output",
                "subprocess.getoutput",
                "subprocess.getstatusoutput",
                "subprocess.run",
            }
        ),
    ),
    Question(
        "create a temporary directory that is removed afterwards",
        frozenset({"tempfile.TemporaryDirectory"}),
    ),
    Question("indent every line of a text", frozenset({"textwrap.indent"})),
    Question("current time in seconds since the epoch", frozenset({"time.time", "time.time_ns"})),
    Question(
        "measure cpu time of the current process",
        frozenset({"time.process_time", "time.process_time_ns"}),
    ),
    Question(
        "decode percent-encoded characters in a url",
        frozenset(
            {"urllib.parse.unquote", "urllib.parse.unquote_plus", "urllib.parse.unquote_to_bytes"}
        ),
    ),
    Question("generate a random uuid", frozenset({"uuid.uuid4"})),
    Question("check whether a file is a valid zip file", frozenset({"zipfile.is_zipfile"})),
    Question(
        "add a file to a tar archive", frozenset({"tarfile.TarFile.add", "tarfile.TarFile.addfile"})
    ),
)


#: Written on 2026-12-02 after the recipe of ``scripts/build_reranker.py`` was fixed (commit
#: e38dcf9) and before it was scored on them, about objects no other question answers (another
#: question's object may be an alternative answer): a second held-out set, larger than the
#: first, for an estimate the recipe search never saw. Reported by ``build_reranker.py --eval
#: heldout2``; never used to choose anything.
HELDOUT2_QUESTIONS: tuple[Question, ...] = (
    Question("convert an angle from degrees to radians", frozenset({"math.radians"})),
    Question("cube root of a number", frozenset({"math.cbrt"})),
    Question("logarithm base 2 of a number", frozenset({"math.log", "math.log2"})),
    Question("check if a number is infinite", frozenset({"math.isinf"})),
    Question("split a float into its integer and fractional parts", frozenset({"math.modf"})),
    Question("absolute value of a float", frozenset({"math.fabs"})),
    Question("average of a list of numbers", frozenset({"statistics.fmean", "statistics.mean"})),
    Question(
        "most common value in a list",
        frozenset({"collections.Counter.most_common", "statistics.mode", "statistics.multimode"}),
    ),
    Question("variance of a sample of numbers", frozenset({"statistics.variance"})),
    Question("pearson correlation between two lists", frozenset({"statistics.correlation"})),
    Question(
        "fit a straight line to x and y data",
        frozenset({"statistics.LinearRegression", "statistics.linear_regression"}),
    ),
    Question("divide a list of numbers into quartiles", frozenset({"statistics.quantiles"})),
    Question(
        "pick random items with weights", frozenset({"random.Random.choices", "random.choices"})
    ),
    Question(
        "set the random seed so results are reproducible",
        frozenset({"random.Random.seed", "random.seed"}),
    ),
    Question(
        "random integer below n that is safe for cryptography", frozenset({"secrets.randbelow"})
    ),
    Question("generate secure random bytes", frozenset({"secrets.token_bytes"})),
    Question("encode bytes as base32", frozenset({"base64.b32encode"})),
    Question(
        "base64 encode some bytes",
        frozenset({"base64.b64encode", "base64.encodebytes", "base64.standard_b64encode"}),
    ),
    Question("decode url-safe base64", frozenset({"base64.urlsafe_b64decode"})),
    Question("compile a regular expression to reuse it", frozenset({"re.compile"})),
    Question(
        "check whether an entire string matches a regex",
        frozenset({"re.Pattern.fullmatch", "re.fullmatch"}),
    ),
    Question(
        "find the first match of a pattern anywhere in a string",
        frozenset({"re.Pattern.search", "re.search"}),
    ),
    Question(
        "start and end position of a regex match",
        frozenset({"re.Match.end", "re.Match.span", "re.Match.start"}),
    ),
    Question(
        "join a list of arguments into a shell command string",
        frozenset({"shlex.join", "subprocess.list2cmdline"}),
    ),
    Question(
        "send input to a subprocess and read its output",
        frozenset({"subprocess.Popen.communicate"}),
    ),
    Question(
        "raise an error if a command exited with a non-zero status",
        frozenset(
            {
                "subprocess.CalledProcessError",
                "subprocess.CompletedProcess.check_returncode",
                "subprocess.check_call",
            }
        ),
    ),
    Question(
        "check whether a child process is still running", frozenset({"subprocess.Popen.poll"})
    ),
    Question("make a unique temporary directory and get its path", frozenset({"tempfile.mkdtemp"})),
    Question(
        "where is the system's temp directory",
        frozenset({"tempfile.gettempdir", "tempfile.gettempdirb"}),
    ),
    Question("check whether a thread is still running", frozenset({"threading.Thread.is_alive"})),
    Question(
        "how many threads are alive right now",
        frozenset({"threading.activeCount", "threading.active_count", "threading.enumerate"}),
    ),
    Question(
        "wait in a thread until a condition becomes true",
        frozenset({"threading.Condition.wait", "threading.Condition.wait_for"}),
    ),
    Question("a lock the same thread can acquire several times", frozenset({"threading.RLock"})),
    Question("date from an ISO year and week number", frozenset({"datetime.date.fromisocalendar"})),
    Question(
        "convert a datetime to a unix timestamp",
        frozenset({"datetime.datetime.timestamp", "time.mktime"}),
    ),
    Question(
        "convert a datetime to another time zone", frozenset({"datetime.datetime.astimezone"})
    ),
    Question(
        "change the year of a date",
        frozenset({"datetime.date.replace", "datetime.datetime.replace"}),
    ),
    Question(
        "format a date as YYYY-MM-DD",
        frozenset(
            {"datetime.date.isoformat", "datetime.date.strftime", "datetime.datetime.isoformat"}
        ),
    ),
    Question(
        "print the calendar of one month",
        frozenset(
            {
                "calendar.TextCalendar.formatmonth",
                "calendar.TextCalendar.prmonth",
                "calendar.month",
                "calendar.prmonth",
            }
        ),
    ),
    Question(
        "read one file from a zip archive into memory",
        frozenset({"zipfile.ZipFile.open", "zipfile.ZipFile.read"}),
    ),
    Question(
        "write a string into a zip archive as a file", frozenset({"zipfile.ZipFile.writestr"})
    ),
    Question("check a zip archive for corrupted files", frozenset({"zipfile.ZipFile.testzip"})),
    Question(
        "extract a single member of a tar archive",
        frozenset({"tarfile.TarFile.extract", "tarfile.TarFile.extractfile"}),
    ),
    Question("check if a file is a tar archive", frozenset({"tarfile.is_tarfile"})),
    Question("make a symbolic link with pathlib", frozenset({"pathlib.Path.symlink_to"})),
    Question("delete a file with pathlib", frozenset({"pathlib.Path.unlink"})),
    Question("write a string to a file with pathlib", frozenset({"pathlib.Path.write_text"})),
    Question(
        "change the file name in a path",
        frozenset({"pathlib.PurePath.with_name", "pathlib.PurePath.with_stem"}),
    ),
    Question("who owns a file", frozenset({"pathlib.Path.owner"})),
    Question("turn a path into a file:// URI", frozenset({"pathlib.PurePath.as_uri"})),
    Question("longest common directory of several paths", frozenset({"os.path.commonpath"})),
    Question("is a path absolute", frozenset({"os.path.isabs", "pathlib.PurePath.is_absolute"})),
    Question("remove an empty directory and its empty parents", frozenset({"os.removedirs"})),
    Question(
        "copy a file's permission bits to another file",
        frozenset({"shutil.copymode", "shutil.copystat"}),
    ),
    Question(
        "skip some files when copying a directory tree", frozenset({"shutil.ignore_patterns"})
    ),
    Question(
        "copy data from one open file object to another",
        frozenset({"shutil.copyfileobj", "tarfile.copyfileobj"}),
    ),
    Question(
        "remove and return the leftmost item of a deque", frozenset({"collections.deque.popleft"})
    ),
    Question(
        "add counts from another list to a Counter", frozenset({"collections.Counter.update"})
    ),
    Question("count up from a number forever", frozenset({"itertools.count"})),
    Question("repeat the same value n times as an iterator", frozenset({"itertools.repeat"})),
    Question(
        "skip items at the start of an iterator while a condition holds",
        frozenset({"itertools.dropwhile"}),
    ),
    Question("split one iterator into several independent ones", frozenset({"itertools.tee"})),
    Question("keep the items of a list where a mask is true", frozenset({"itertools.compress"})),
    Question(
        "method that dispatches on its argument's type",
        frozenset({"functools.singledispatchmethod"}),
    ),
    Question("hash data with an algorithm chosen by name", frozenset({"hashlib.new"})),
    Question("a monotonic clock in nanoseconds", frozenset({"time.monotonic_ns"})),
    Question(
        "boolean --flag and --no-flag options with argparse",
        frozenset({"argparse.BooleanOptionalAction"}),
    ),
    Question(
        "show default values in argparse help",
        frozenset({"argparse.ArgumentDefaultsHelpFormatter"}),
    ),
    Question(
        "keep my line breaks in argparse help text",
        frozenset({"argparse.RawDescriptionHelpFormatter", "argparse.RawTextHelpFormatter"}),
    ),
    Question("get the MAC address of this machine", frozenset({"uuid.getnode"})),
    Question("remove the fragment from a url", frozenset({"urllib.parse.urldefrag"})),
    Question(
        "parse a query string into a list of key value pairs", frozenset({"urllib.parse.parse_qsl"})
    ),
    Question(
        "put the parts of a url back together",
        frozenset({"urllib.parse.urlunparse", "urllib.parse.urlunsplit"}),
    ),
)
