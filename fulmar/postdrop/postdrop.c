/*
 * NAME
 *	postdrop - Fulmar mail posting helper (setgid setgid_group)
 * SYNOPSIS
 *	postdrop queue_directory < maildrop-stream
 * DESCRIPTION
 *	Installed set-group-ID to $setgid_group (postdrop), so that an
 *	unprivileged sendmail can put a message into maildrop/ (mode 1730,
 *	owner mail_owner, group postdrop) without being able to read, change
 *	or delete anybody else's files there: the group grants write and
 *	search, not read (nobody can list the directory), and the sticky
 *	bit keeps users from removing or renaming files they do not own.
 *	The file is owned by the submitting user; pickup takes the user ID
 *	from the file owner, never from the file's content.
 *
 *	postdrop copies standard input into maildrop/.postdrop.PID.N
 *	(O_EXCL, O_NOFOLLOW, mode 0600), checks that the input ended with
 *	the end record of a Fulmar maildrop stream (a sendmail that died
 *	leaves nothing behind), fsyncs it, makes it mode 0644 (pickup runs as
 *	mail_owner and must read it; maildrop's mode keeps everyone else
 *	out), links it under a long queue ID name, removes the temporary
 *	name, makes the name durable with syncfs(2) (a group member cannot
 *	open maildrop/ to fsync it), prints the name on standard output and
 *	wakes pickup by connecting to public/pickup (a lost wakeup only
 *	delays the mail until pickup's next scan).
 *
 *	It does not parse the stream: pickup treats every maildrop file as
 *	hostile. It never reads a configuration file, never executes
 *	anything, and uses its group privilege only inside
 *	queue_directory/maildrop, which must be a directory owned by group
 *	setgid_group that is not writable by others.
 * DIAGNOSTICS
 *	"postdrop: fatal: ..." on standard error, exit 75 (EX_TEMPFAIL);
 *	64 (EX_USAGE) for a bad command line. Exit 0 on success.
 * BUILD
 *	python -m fulmar.postdrop.build --install BINDIR  (cc -O2 -Wall)
 */

#define _GNU_SOURCE
#include <sys/types.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#define EX_USAGE	64
#define EX_TEMPFAIL	75

/* The encoded empty end record: 'E', length 0, CRC-32 (records.py). */
static const unsigned char END_RECORD[9] = {
    0x45, 0x00, 0x00, 0x00, 0x00, 0x56, 0x31, 0x20, 0x24
};

static const char ALPHABET[] =
    "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz";

static int dir_fd = -1;
static char tmp_name[64];

static void cleanup_tmp(void)
{
    if (dir_fd >= 0 && tmp_name[0])
	(void) unlinkat(dir_fd, tmp_name, 0);
}

static void fatal(const char *fmt, ...)
{
    va_list ap;

    cleanup_tmp();
    fputs("postdrop: fatal: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(EX_TEMPFAIL);
}

static void on_signal(int sig)
{
    cleanup_tmp();
    _exit(EX_TEMPFAIL);
    (void) sig;
}

/* encode - base-N digits, most significant first, zero-padded to pad */
static size_t encode(char *out, unsigned long long value, unsigned base, size_t pad)
{
    char    tmp[32];
    size_t  n = 0, i;

    while (value) {
	tmp[n++] = ALPHABET[value % base];
	value /= base;
    }
    while (n < pad)
	tmp[n++] = '0';
    for (i = 0; i < n; i++)
	out[i] = tmp[n - 1 - i];
    return n;
}

static void write_all(int fd, const unsigned char *buf, size_t len)
{
    while (len > 0) {
	ssize_t n = write(fd, buf, len);

	if (n < 0) {
	    if (errno == EINTR)
		continue;
	    fatal("write %s: %s", tmp_name, strerror(errno));
	}
	buf += n;
	len -= (size_t) n;
    }
}

static void trigger_pickup(const char *queue_dir)
{
    struct sockaddr_un sun;
    int     s;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if ((size_t) snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/public/pickup",
			  queue_dir) >= sizeof(sun.sun_path))
	return;
    if ((s = socket(AF_UNIX, SOCK_STREAM, 0)) < 0)
	return;
    (void) connect(s, (struct sockaddr *) &sun, sizeof(sun));
    (void) close(s);
}

int     main(int argc, char **argv)
{
    const char *queue_dir;
    char    path[4096];
    unsigned char buf[65536];
    unsigned char tail[sizeof(END_RECORD)];
    size_t  tail_len = 0;
    unsigned long long total = 0;
    struct stat st;
    struct timeval tv;
    char    name[64];
    size_t  n;
    int     fd, attempt;

    if (argc != 2 || argv[1][0] != '/' || strstr(argv[1], "/../") != 0) {
	fputs("postdrop: fatal: usage: postdrop /queue_directory\n", stderr);
	return EX_USAGE;
    }
    queue_dir = argv[1];
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    umask(077);

    if ((size_t) snprintf(path, sizeof(path), "%s/maildrop", queue_dir) >= sizeof(path))
	fatal("queue directory name too long");
    /* maildrop/ is not readable by the group: an O_PATH handle suffices for *at(). */
    if ((dir_fd = open(path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
	fatal("open %s: %s", path, strerror(errno));
    if (fstat(dir_fd, &st) < 0)
	fatal("stat %s: %s", path, strerror(errno));
    /* Use the group privilege only where it is meant for. */
    if (getegid() != getgid() && (st.st_gid != getegid() || (st.st_mode & S_IWOTH)))
	fatal("%s: not a maildrop directory of this group", path);

    for (attempt = 0; attempt < 100; attempt++) {
	snprintf(tmp_name, sizeof(tmp_name), ".postdrop.%ld.%d", (long) getpid(), attempt);
	fd = openat(dir_fd, tmp_name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd >= 0)
	    break;
	if (errno != EEXIST) {
	    tmp_name[0] = 0;
	    fatal("create file in %s: %s", path, strerror(errno));
	}
    }
    if (fd < 0) {
	tmp_name[0] = 0;
	fatal("create file in %s: no free name", path);
    }

    for (;;) {
	ssize_t got = read(0, buf, sizeof(buf));

	if (got < 0) {
	    if (errno == EINTR)
		continue;
	    fatal("read standard input: %s", strerror(errno));
	}
	if (got == 0)
	    break;
	n = (size_t) got;
	write_all(fd, buf, n);
	total += n;
	/* Keep the last 9 bytes to check the end record. */
	if (n >= sizeof(tail)) {
	    memcpy(tail, buf + n - sizeof(tail), sizeof(tail));
	    tail_len = sizeof(tail);
	} else {
	    size_t keep = tail_len + n > sizeof(tail) ? sizeof(tail) - n : tail_len;

	    memmove(tail, tail + tail_len - keep, keep);
	    memcpy(tail + keep, buf, n);
	    tail_len = keep + n;
	}
    }
    if (tail_len != sizeof(tail) || memcmp(tail, END_RECORD, sizeof(tail)) != 0)
	fatal("premature end of input: message not submitted");
    if (fsync(fd) < 0)
	fatal("fsync %s: %s", tmp_name, strerror(errno));
    if (fchmod(fd, 0644) < 0 || fstat(fd, &st) < 0)
	fatal("fchmod %s: %s", tmp_name, strerror(errno));

    for (attempt = 0; attempt < 100; attempt++) {
	size_t  len;

	gettimeofday(&tv, 0);
	len = encode(name, (unsigned long long) tv.tv_sec, 52, 6);
	len += encode(name + len, (unsigned long long) tv.tv_usec, 52, 4);
	name[len++] = 'z';
	len += encode(name + len, (unsigned long long) st.st_ino, 51, 1);
	name[len] = 0;
	if (linkat(dir_fd, tmp_name, dir_fd, name, 0) == 0)
	    break;
	if (errno != EEXIST)
	    fatal("link %s: %s", name, strerror(errno));
    }
    if (attempt == 100)
	fatal("no free queue file name");
    (void) unlinkat(dir_fd, tmp_name, 0);
    tmp_name[0] = 0;

    /*
     * The directory cannot be opened for reading (mode 1730), so it cannot
     * be fsync()ed; syncfs() on the file makes the new name durable too.
     */
    if (syncfs(fd) < 0)
	fatal("syncfs %s: %s", path, strerror(errno));
    (void) close(fd);
    printf("%s\n", name);
    fflush(stdout);
    trigger_pickup(queue_dir);
    (void) total;
    return 0;
}
