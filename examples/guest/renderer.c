/* renderer.c - the workload of ipkit's test guest.
 *
 * It behaves like a small rendering service whose memory a checkpoint tool
 * has to copy: a malloc'd buffer (not page aligned, as glibc hands out large
 * blocks 16 bytes past a page boundary) holding ~50 % texture-like pages
 * (banded gradients and tiles, LZ4 friendly), ~25 % zero pages and ~25 %
 * incompressible pseudo-random pages.  Every second it rewrites a share of
 * the buffer (4 KiB blocks at random 16-byte aligned offsets, so each write
 * straddles two guest pages), then prints a heartbeat on the console.
 *
 * Guest mode (default build): parameters come from /proc/cmdline
 *   ipkit.mem=MiB     buffer size (default 64)
 *   ipkit.dirty=PCT   percent of the buffer's pages rewritten per second,
 *                     fractional allowed (default 1)
 *   ipkit.seed=N      seed of the fill and of the rewrites (default 1)
 * Output on /dev/ttyS0:  "ipkit-heartbeat <counter> <uptime-ms>" each second.
 * Control on /dev/ttyS1 (raw, 115200), one command a line:
 *   verify     -> "ipkit-verify <frame-fnv1a64-hex> <counter>"
 *   ping       -> "ipkit-pong <counter>"
 *   timer MS   -> "ipkit-timer <counter>" once a timer of MS (1..1000) ms,
 *                 armed in the heartbeat loop, has fired: a verifier sees
 *                 the guest's timers run without waiting for a heartbeat
 *   dirty PCT  -> "ipkit-dirty <pct>" and the new rate applies at once
 * One UDP datagram a second goes to the broadcast address of eth0 (port 9)
 * once eth0 has an IPv4 address, so the NIC's counters move.
 *
 * Host mode (any build): --frame-checksum prints the checksum that "verify"
 * must answer; --run [--mem M] [--dirty P] [--seed S] [--seconds N]
 * [--cmdline FILE] runs the loop with heartbeats on stdout and commands on
 * stdin.  Built with -DIPKIT_RENDERER_HOST, running without arguments prints
 * the usage instead of taking over the serial ports.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define FRAME_W 64
#define FRAME_H 64
#define STATE_MAGIC 0x9e3779b97f4a7c15ull

struct params {
	unsigned long mem_mib;
	double dirty_pct;
	uint64_t seed;
};

/* The heartbeat counter lives in guest memory, next to a redundant check
 * word, so that a restored guest continues counting and a torn or stale
 * restore shows up in "verify". */
static struct {
	uint64_t counter;
	uint64_t check;
} g_state;

static uint64_t state_check(uint64_t c)
{
	uint64_t x = (c + 1) * STATE_MAGIC;
	return x ^ (x >> 29) ^ 0x69706b69ull;
}

/* ---- small deterministic helpers ---------------------------------------- */

static uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

static uint64_t fnv1a64(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

#define FNV_OFFSET 0xcbf29ce484222325ull

/* ---- the verification frame ---------------------------------------------- */

/* A 64x64 RGBA Mandelbrot rendered in fixed point (Q20 in
 * int64), so that every build on every CPU gets the same bytes. */
static void render_frame(unsigned char *rgba)
{
	const int64_t one = 1 << 20;
	const int64_t x0 = -2 * one - one / 2, x1 = one / 2;
	const int64_t y0 = -(one + one / 4), y1 = one + one / 4;
	for (int py = 0; py < FRAME_H; py++) {
		for (int px = 0; px < FRAME_W; px++) {
			int64_t cx = x0 + (x1 - x0) * px / FRAME_W;
			int64_t cy = y0 + (y1 - y0) * py / FRAME_H;
			int64_t zx = 0, zy = 0;
			int it = 0;
			while (it < 96) {
				int64_t zx2 = zx * zx / one, zy2 = zy * zy / one;
				if (zx2 + zy2 > 4 * one)
					break;
				int64_t nzy = 2 * zx * zy / one + cy;
				zx = zx2 - zy2 + cx;
				zy = nzy;
				it++;
			}
			unsigned char *o = rgba + 4 * (py * FRAME_W + px);
			o[0] = (unsigned char)(it * 5 + px);
			o[1] = (unsigned char)(it * it);
			o[2] = (unsigned char)(255 - it * 2 - py);
			o[3] = 255;
		}
	}
}

static uint64_t frame_checksum(void)
{
	static unsigned char rgba[FRAME_W * FRAME_H * 4];
	render_frame(rgba);
	return fnv1a64(FNV_OFFSET, rgba, sizeof rgba);
}

/* ---- buffer content ------------------------------------------------------- */

/* Texture-like block: a 32-pixel wide RGBA tile whose colour changes every
 * 8 pixels and every 4 rows: long runs, compresses well with LZ4. */
static void fill_texture(unsigned char *p, size_t n, uint64_t v)
{
	unsigned r0 = (unsigned)(v & 0xff), g0 = (unsigned)((v >> 8) & 0xff);
	unsigned b0 = (unsigned)((v >> 16) & 0xff);
	unsigned style = (unsigned)((v >> 24) & 3);
	for (size_t i = 0; i + 4 <= n; i += 4) {
		unsigned px = (unsigned)(i / 4);
		unsigned x = px % 32, y = px / 32;
		unsigned bx = x / 8, by = y / 4;
		unsigned char *o = p + i;
		switch (style) {
		case 0: /* vertical gradient */
			o[0] = (unsigned char)(r0 + by * 3);
			o[1] = (unsigned char)(g0 + by * 2);
			o[2] = (unsigned char)(b0 + by);
			break;
		case 1: /* diagonal gradient */
			o[0] = (unsigned char)(r0 + (bx + by) * 4);
			o[1] = (unsigned char)(g0 + bx * 2);
			o[2] = (unsigned char)(b0 + by * 2);
			break;
		case 2: /* checker tile */
			o[0] = (unsigned char)(((bx ^ by) & 1) ? r0 : 255 - r0);
			o[1] = (unsigned char)(((bx ^ by) & 1) ? g0 : 255 - g0);
			o[2] = (unsigned char)b0;
			break;
		default: /* flat colour with a thin grid */
			o[0] = (unsigned char)((x == 0 || y % 16 == 0) ? 0 : r0);
			o[1] = (unsigned char)g0;
			o[2] = (unsigned char)b0;
			break;
		}
		o[3] = 255;
	}
	for (size_t i = n & ~(size_t)3; i < n; i++)
		p[i] = (unsigned char)r0;
}

static void fill_random(unsigned char *p, size_t n, uint64_t *rng)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t r = xorshift64(rng);
		memcpy(p + i, &r, 8);
	}
	for (; i < n; i++)
		p[i] = (unsigned char)xorshift64(rng);
}

/* Page-sized chunks are taken at real page boundaries inside the buffer, so
 * that the zero chunks are whole zero guest pages. */
static void fill_buffer(unsigned char *buf, size_t len, uint64_t seed)
{
	uint64_t rng = mix64(seed) | 1;
	uintptr_t a = (uintptr_t)buf;
	size_t head = (size_t)(((a + PAGE - 1) & ~(uintptr_t)(PAGE - 1)) - a);
	if (head > len)
		head = len;
	fill_texture(buf, head, mix64(seed ^ 0x51));
	size_t idx = 0;
	for (size_t off = head; off < len; off += PAGE, idx++) {
		size_t n = len - off < PAGE ? len - off : PAGE;
		uint64_t h = mix64(seed * 0x100000001b3ull + idx);
		switch (h & 3) {
		case 0:
		case 1:
			fill_texture(buf + off, n, h >> 2);
			break;
		case 2:
			memset(buf + off, 0, n); /* touch it: a real zero page */
			break;
		default:
			fill_random(buf + off, n, &rng);
			break;
		}
	}
}

/* ---- I/O helpers ---------------------------------------------------------- */

static int out_fd = 1;  /* heartbeats */
static int ctl_in = 0;  /* commands */
static int ctl_out = 1; /* answers */

static void write_all(int fd, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, s, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd p = { .fd = fd, .events = POLLOUT };
				if (poll(&p, 1, 200) <= 0)
					return; /* nobody reads: drop */
				continue;
			}
			return;
		}
		s += w;
		n -= (size_t)w;
	}
}

__attribute__((format(printf, 2, 3)))
static void say(int fd, const char *fmt, ...)
{
	char b[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(b, sizeof b, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof b)
		n = (int)sizeof b - 1;
	write_all(fd, b, (size_t)n);
}

#ifndef IPKIT_RENDERER_HOST
static int open_serial(const char *path, int flags)
{
	int fd = open(path, flags | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	struct termios t;
	if (tcgetattr(fd, &t) == 0) {
		cfmakeraw(&t);
		cfsetispeed(&t, B115200);
		cfsetospeed(&t, B115200);
		t.c_cflag |= CLOCAL | CREAD;
		tcsetattr(fd, TCSANOW, &t);
		tcflush(fd, TCIFLUSH);
	}
	return fd;
}
#endif

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- parameters ----------------------------------------------------------- */

static void parse_kv(struct params *p, const char *tok)
{
	if (strncmp(tok, "ipkit.mem=", 10) == 0) {
		unsigned long v = strtoul(tok + 10, NULL, 10);
		if (v > 0)
			p->mem_mib = v;
	} else if (strncmp(tok, "ipkit.dirty=", 12) == 0) {
		double v = strtod(tok + 12, NULL);
		if (v >= 0 && v <= 100)
			p->dirty_pct = v;
	} else if (strncmp(tok, "ipkit.seed=", 11) == 0) {
		p->seed = strtoull(tok + 11, NULL, 0);
	}
}

static void parse_cmdline_file(struct params *p, const char *path)
{
	char b[4096];
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	size_t n = fread(b, 1, sizeof b - 1, f);
	fclose(f);
	b[n] = 0;
	char *save = NULL;
	for (char *t = strtok_r(b, " \t\n", &save); t; t = strtok_r(NULL, " \t\n", &save))
		parse_kv(p, t);
}

/* ---- network heartbeat ---------------------------------------------------- */

static int udp_fd = -1;
static struct sockaddr_in udp_dst;

static void udp_setup(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	strncpy(ifr.ifr_name, "eth0", IFNAMSIZ - 1);
	if (ioctl(s, SIOCGIFADDR, &ifr) < 0) {
		close(s);
		return;
	}
	uint32_t addr = ((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr.s_addr;
	uint32_t mask = htonl(0xffffff00u);
	if (ioctl(s, SIOCGIFNETMASK, &ifr) == 0)
		mask = ((struct sockaddr_in *)&ifr.ifr_netmask)->sin_addr.s_addr;
	int on = 1;
	setsockopt(s, SOL_SOCKET, SO_BROADCAST, &on, sizeof on);
	setsockopt(s, SOL_SOCKET, SO_BINDTODEVICE, "eth0", 5);
	memset(&udp_dst, 0, sizeof udp_dst);
	udp_dst.sin_family = AF_INET;
	udp_dst.sin_port = htons(9); /* discard */
	udp_dst.sin_addr.s_addr = addr | ~mask;
	udp_fd = s;
}

static void udp_send(uint64_t counter)
{
	if (udp_fd < 0 && counter % 3 == 1)
		udp_setup();
	if (udp_fd < 0)
		return;
	char msg[64];
	int n = snprintf(msg, sizeof msg, "ipkit-heartbeat %" PRIu64, counter);
	if (sendto(udp_fd, msg, (size_t)n, MSG_DONTWAIT, (struct sockaddr *)&udp_dst,
		   sizeof udp_dst) < 0 && errno != EAGAIN && errno != ENOBUFS) {
		close(udp_fd); /* address gone or changed: look again later */
		udp_fd = -1;
	}
}

/* ---- the loop ------------------------------------------------------------- */

static double g_dirty;
static double g_dirty_acc;
static uint64_t g_timer_due; /* the "timer" command's deadline (ms), 0: none */

static void dirty_tick(unsigned char *buf, size_t len, uint64_t *rng)
{
	if (len < PAGE + 16)
		return;
	double pages = (double)(len / PAGE);
	g_dirty_acc += pages * g_dirty / 100.0;
	size_t n = (size_t)g_dirty_acc;
	g_dirty_acc -= (double)n;
	size_t slots = (len - PAGE) / 16 + 1;
	for (size_t i = 0; i < n; i++) {
		size_t off = (size_t)(xorshift64(rng) % slots) * 16;
		fill_texture(buf + off, PAGE, xorshift64(rng) ^ g_state.counter);
	}
}

static void handle_line(char *line)
{
	size_t n = strlen(line);
	while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\r'))
		line[--n] = 0;
	while (*line == ' ')
		line++;
	if (*line == 0)
		return;
	uint64_t c = g_state.counter;
	if (strcmp(line, "verify") == 0) {
		if (g_state.check != state_check(c))
			say(ctl_out, "ipkit-verify-error state %" PRIu64 "\n", c);
		else
			say(ctl_out, "ipkit-verify %016" PRIx64 " %" PRIu64 "\n",
			    frame_checksum(), c);
	} else if (strcmp(line, "ping") == 0) {
		say(ctl_out, "ipkit-pong %" PRIu64 "\n", c);
	} else if (strncmp(line, "timer ", 6) == 0) {
		char *end;
		unsigned long ms = strtoul(line + 6, &end, 10);
		if (end == line + 6 || *end || ms < 1 || ms > 1000) {
			say(ctl_out, "ipkit-error bad-timer\n");
			return;
		}
		g_timer_due = now_ms() + ms;
	} else if (strncmp(line, "dirty ", 6) == 0) {
		char *end;
		double v = strtod(line + 6, &end);
		if (end == line + 6 || !(v >= 0 && v <= 100)) {
			say(ctl_out, "ipkit-error bad-dirty\n");
			return;
		}
		g_dirty = v;
		say(ctl_out, "ipkit-dirty %g\n", v);
	} else {
		say(ctl_out, "ipkit-error unknown-command\n");
	}
}

static int run(const struct params *p, long seconds)
{
	size_t len = (size_t)p->mem_mib << 20;
	unsigned char *buf = malloc(len);
	if (!buf) {
		say(out_fd, "ipkit-renderer error: cannot allocate %lu MiB\n", p->mem_mib);
		return 1;
	}
	uint64_t t0 = now_ms();
	fill_buffer(buf, len, p->seed);
	g_dirty = p->dirty_pct;
	g_state.counter = 0;
	g_state.check = state_check(0);
	say(out_fd, "ipkit-renderer ready mem=%lu dirty=%g seed=%" PRIu64
	    " buf-offset=%u fill-ms=%" PRIu64 "\n", p->mem_mib, p->dirty_pct, p->seed,
	    (unsigned)((uintptr_t)buf % PAGE), now_ms() - t0);

	uint64_t rng = mix64(p->seed + 7) | 1;
	char line[256];
	size_t ll = 0;
	uint64_t next = now_ms() + 1000;
	for (;;) {
		uint64_t now = now_ms();
		if (g_timer_due && now >= g_timer_due) {
			g_timer_due = 0;
			say(ctl_out, "ipkit-timer %" PRIu64 "\n", g_state.counter);
		}
		if (now >= next) {
			dirty_tick(buf, len, &rng);
			uint64_t c = g_state.counter + 1;
			g_state.counter = c;
			g_state.check = state_check(c);
			say(out_fd, "ipkit-heartbeat %" PRIu64 " %" PRIu64 "\n", c, now_ms());
			udp_send(c);
			if (seconds > 0 && c >= (uint64_t)seconds)
				break;
			next += 1000;
			if (next <= now) /* clock jumped (e.g. restore): no burst */
				next = now + 1000;
			continue;
		}
		struct pollfd pf = { .fd = ctl_in, .events = POLLIN };
		uint64_t wake = g_timer_due && g_timer_due < next ? g_timer_due : next;
		int r = poll(&pf, ctl_in >= 0 ? 1 : 0, (int)(wake - now));
		if (r <= 0 || !(pf.revents & (POLLIN | POLLHUP)))
			continue;
		char b[128];
		ssize_t n = read(ctl_in, b, sizeof b);
		if (n <= 0) {
			if (n == 0 || (errno != EAGAIN && errno != EINTR))
				ctl_in = -1; /* stdin closed in host mode */
			continue;
		}
		for (ssize_t i = 0; i < n; i++) {
			if (b[i] == '\n' || b[i] == '\r') {
				line[ll] = 0;
				handle_line(line);
				ll = 0;
			} else if (b[i] >= 0x20 && b[i] < 0x7f && ll + 1 < sizeof line) {
				line[ll++] = b[i]; /* line noise is dropped */
			}
		}
	}
	free(buf);
	return 0;
}

static void usage(FILE *f)
{
	fputs("usage: renderer --frame-checksum\n"
	      "       renderer --run [--mem MiB] [--dirty PCT] [--seed N] [--seconds N]"
	      " [--cmdline FILE]\n"
	      "       renderer          (guest mode: /proc/cmdline, ttyS0, ttyS1)\n", f);
}

int main(int argc, char **argv)
{
	struct params p = { .mem_mib = 64, .dirty_pct = 1.0, .seed = 1 };
	long seconds = 0;
	int host_run = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--frame-checksum") == 0) {
			printf("%016" PRIx64 "\n", frame_checksum());
			return 0;
		} else if (strcmp(a, "--run") == 0) {
			host_run = 1;
		} else if (strcmp(a, "--mem") == 0 && v) {
			p.mem_mib = strtoul(v, NULL, 10);
			i++;
		} else if (strcmp(a, "--dirty") == 0 && v) {
			p.dirty_pct = strtod(v, NULL);
			i++;
		} else if (strcmp(a, "--seed") == 0 && v) {
			p.seed = strtoull(v, NULL, 0);
			i++;
		} else if (strcmp(a, "--seconds") == 0 && v) {
			seconds = strtol(v, NULL, 10);
			i++;
		} else if (strcmp(a, "--cmdline") == 0 && v) {
			parse_cmdline_file(&p, v);
			i++;
		} else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 64;
		}
	}
	if (p.mem_mib == 0 || !(p.dirty_pct >= 0 && p.dirty_pct <= 100) || isnan(p.dirty_pct)) {
		fputs("renderer: bad --mem or --dirty\n", stderr);
		return 64;
	}
	if (host_run) {
		fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
		setvbuf(stdout, NULL, _IONBF, 0);
		return run(&p, seconds);
	}
#ifdef IPKIT_RENDERER_HOST
	usage(stderr);
	return 64;
#else
	parse_cmdline_file(&p, "/proc/cmdline");
	int fd = open_serial("/dev/ttyS0", O_WRONLY);
	if (fd >= 0)
		out_fd = fd;
	ctl_in = open_serial("/dev/ttyS1", O_RDWR | O_NONBLOCK);
	ctl_out = ctl_in >= 0 ? ctl_in : out_fd;
	if (ctl_in < 0)
		say(out_fd, "ipkit-renderer warning: no /dev/ttyS1, no control channel\n");
	return run(&p, 0);
#endif
}
