/* source_evdev.c - client input counted from a Linux input device (see
 * sources.h).
 *
 * Reads struct input_event records (linux/input.h) from a character device
 * /dev/input/eventN, opened read-only and non-blocking (never grabbed: the
 * user's input still reaches the desktop), or from any other readable file
 * of such records - a FIFO or a regular file - which is how tests feed it.
 * Each interval reads what is available and groups the events into frames
 * ended by SYN_REPORT; a SYN_DROPPED (the kernel's buffer overflowed)
 * discards events up to and including the next SYN_REPORT. Per frame:
 *   keys      EV_KEY presses (value 1, not auto-repeat 2) of keyboard keys:
 *             codes 1..BTN_MISC-1 and KEY_OK..KEY_MAX, and the other
 *             non-pointer buttons (joystick, gamepad, d-pad, trigger-happy)
 *   clicks    EV_KEY presses of pointer buttons: BTN_LEFT..BTN_TASK,
 *             BTN_STYLUS, BTN_STYLUS2, BTN_STYLUS3
 *   scrolls   1 for a frame with REL_WHEEL, REL_HWHEEL or their _HI_RES
 *             variants (a high-resolution wheel sends both: counted once)
 *   mouse_px  EV_REL: the length of the frame's (REL_X, REL_Y) motion;
 *             EV_ABS: the distance from the previous ABS_X/ABS_Y position,
 *             in the device's units, forgotten when BTN_TOUCH or a
 *             BTN_TOOL_* goes up (a finger lifted is not a jump)
 *   events    the user actions in the frame: every key or button press and
 *             release (auto-repeat excluded), plus 1 when the pointer moved,
 *             plus 1 when it scrolled, plus 1 when another axis changed
 *             (joystick, pressure, multitouch); SYN, EV_MSC scan codes, LEDs
 *             and repeats are not events. A click is 2 events (press and
 *             release), as in the Balabit traces the replay reads.
 * input_age_s is the interval's end minus the timestamp of the last event
 * that counted (the kernel stamps events with CLOCK_REALTIME by default;
 * a file must carry real times), at least 0; absent until the first event.
 * The session is the one given, or the local host name.
 *
 * A device that goes away (read fails with ENODEV) gives one warning; the
 * source then adds nothing and tries to reopen the path once per interval,
 * saying so (info) when it is back. A regular file or FIFO at its end adds
 * zero counts and is read again next interval (a FIFO's next writer).
 */
#define _GNU_SOURCE
#include "sources.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <linux/input.h>

struct ev_counts {
	double keys, clicks, scrolls, px, events;
};

struct ev {
	char *path;
	char *session;
	int fd;
	int is_dev;         /* a character device (evdev) */
	unsigned char part[sizeof(struct input_event)]; /* a partial record left by the last read */
	size_t npart;
	/* the frame being read */
	int f_relx, f_rely;
	int f_wheel, f_abs_moved, f_other, f_abs_xy;
	double f_px;
	int f_keys, f_clicks, f_trans;
	double f_last_t;    /* timestamp of the frame's last counted event */
	int dropping;       /* after SYN_DROPPED, until SYN_REPORT */
	/* absolute pointer */
	int have_abs_x, have_abs_y, abs_known;
	int abs_x, abs_y, prev_x, prev_y;
	/* per interval */
	struct ev_counts c;
	double last_input;  /* timestamp of the last counted event (0: none yet) */
	long dropped;
};

static int is_click(unsigned code)
{
	return (code >= BTN_LEFT && code <= BTN_TASK) || code == BTN_STYLUS || code == BTN_STYLUS2 ||
	       code == BTN_STYLUS3;
}

static int is_tool(unsigned code)
{
	return code == BTN_TOUCH || (code >= BTN_TOOL_PEN && code <= BTN_TOOL_QUADTAP) || code == BTN_TOOL_QUINTTAP;
}

/* A key press that counts as "keys": keyboard keys and non-pointer buttons. */
static int is_key(unsigned code)
{
	if (code == KEY_RESERVED || code > KEY_MAX)
		return 0;
	if (is_click(code) || is_tool(code))
		return 0;
	if (code >= BTN_DIGI && code <= BTN_DIGI + 0xf)
		return 0; /* tablet tools, finger counts, BTN_TOUCH, stylus buttons: not presses of a key */
	if (code >= BTN_MOUSE && code < BTN_JOYSTICK)
		return 0; /* remaining mouse buttons are clicks or unused */
	if (code >= BTN_WHEEL && code <= BTN_GEAR_UP)
		return 0;
	return 1;
}

static void frame_reset(struct ev *e)
{
	e->f_relx = e->f_rely = 0;
	e->f_wheel = e->f_abs_moved = e->f_other = e->f_abs_xy = 0;
	e->f_px = 0;
	e->f_keys = e->f_clicks = e->f_trans = 0;
	e->f_last_t = 0;
}

static void frame_end(struct ev *e)
{
	double px = e->f_px;
	int moved = e->f_abs_moved;
	if (e->f_relx || e->f_rely) {
		px += hypot((double)e->f_relx, (double)e->f_rely);
		moved = 1;
	}
	e->c.keys += e->f_keys;
	e->c.clicks += e->f_clicks;
	e->c.scrolls += e->f_wheel ? 1 : 0;
	e->c.px += px;
	double n = e->f_trans + (moved ? 1 : 0) + (e->f_wheel ? 1 : 0) + (e->f_other ? 1 : 0);
	e->c.events += n;
	if (n > 0 && e->f_last_t > e->last_input)
		e->last_input = e->f_last_t;
	frame_reset(e);
}

/* The absolute pointer moved to (abs_x, abs_y) within this frame. */
static void abs_update(struct ev *e)
{
	if (!e->have_abs_x || !e->have_abs_y)
		return;
	if (e->abs_known && (e->abs_x != e->prev_x || e->abs_y != e->prev_y)) {
		e->f_px += hypot((double)(e->abs_x - e->prev_x), (double)(e->abs_y - e->prev_y));
		e->f_abs_moved = 1;
	}
	e->prev_x = e->abs_x;
	e->prev_y = e->abs_y;
	e->abs_known = 1;
}

static void on_event(struct ev *e, const struct input_event *ie)
{
	double t = (double)ie->input_event_sec + (double)ie->input_event_usec * 1e-6;
	if (ie->type == EV_SYN) {
		if (ie->code == SYN_DROPPED) {
			e->dropping = 1;
			e->dropped++;
			frame_reset(e);
		} else if (ie->code == SYN_REPORT) {
			if (e->dropping) {
				e->dropping = 0;
				frame_reset(e);
				e->abs_known = 0;
			} else {
				if (e->f_abs_xy)
					abs_update(e);
				frame_end(e);
			}
		}
		return;
	}
	if (e->dropping)
		return;
	int counted = 0;
	switch (ie->type) {
	case EV_KEY:
		if (ie->value == 2)
			break; /* auto-repeat */
		if (is_tool(ie->code) && ie->value == 0)
			e->abs_known = 0; /* lifted: the next position is not a motion */
		if (ie->value != 0 && ie->value != 1)
			break;
		e->f_trans++;
		counted = 1;
		if (ie->value == 1) {
			if (is_click(ie->code))
				e->f_clicks++;
			else if (is_key(ie->code))
				e->f_keys++;
		}
		break;
	case EV_REL:
		if (ie->value == 0)
			break;
		counted = 1;
		if (ie->code == REL_X)
			e->f_relx += ie->value;
		else if (ie->code == REL_Y)
			e->f_rely += ie->value;
		else if (ie->code == REL_WHEEL || ie->code == REL_HWHEEL || ie->code == REL_WHEEL_HI_RES ||
			 ie->code == REL_HWHEEL_HI_RES)
			e->f_wheel = 1;
		else
			e->f_other = 1;
		break;
	case EV_ABS:
		counted = 1;
		if (ie->code == ABS_X) {
			e->abs_x = ie->value;
			e->have_abs_x = e->f_abs_xy = 1;
		} else if (ie->code == ABS_Y) {
			e->abs_y = ie->value;
			e->have_abs_y = e->f_abs_xy = 1;
		} else {
			e->f_other = 1;
		}
		break;
	default:
		break; /* EV_MSC, EV_LED, EV_SND, EV_REP, EV_FF, EV_PWR, EV_SW */
	}
	if (counted && t > e->f_last_t)
		e->f_last_t = t;
}

static int ev_open(const char *path, int *is_dev, struct ipk_err *err)
{
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		int en = errno;
		if (en == EACCES || en == EPERM)
			return ipk_err_set(err, IPK_EXIT_NOINPUT,
					   "cannot open input device '%s': %s (add the user to the 'input' group, or run as root)",
					   path, strerror(en));
		return ipk_err_set(err, IPK_EXIT_NOINPUT, "cannot open input device '%s': %s", path, strerror(en));
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int en = errno;
		close(fd);
		return ipk_err_set(err, IPK_EXIT_NOINPUT, "cannot open input device '%s': %s", path, strerror(en));
	}
	if (S_ISDIR(st.st_mode)) {
		close(fd);
		return ipk_err_set(err, IPK_EXIT_NOINPUT, "cannot open input device '%s': %s", path, strerror(EISDIR));
	}
	*is_dev = S_ISCHR(st.st_mode);
	if (*is_dev) {
		int version;
		if (ioctl(fd, EVIOCGVERSION, &version) < 0) {
			close(fd);
			return ipk_err_set(err, IPK_EXIT_NOINPUT, "cannot use input device '%s': not an evdev device", path);
		}
		int clk = CLOCK_REALTIME;
		(void)ioctl(fd, EVIOCSCLOCKID, &clk); /* the default; set in case someone changed it */
	}
	return fd;
}

/* A device's current absolute position, so its first motion has a start. */
static void ev_seed_abs(struct ev *e)
{
	struct input_absinfo ax, ay;
	if (!e->is_dev || ioctl(e->fd, EVIOCGABS(ABS_X), &ax) < 0 || ioctl(e->fd, EVIOCGABS(ABS_Y), &ay) < 0)
		return;
	e->abs_x = e->prev_x = ax.value;
	e->abs_y = e->prev_y = ay.value;
	e->have_abs_x = e->have_abs_y = e->abs_known = 1;
}

/* Read what is available. Returns 0, or -1 with errno set (ENODEV: gone). */
static int ev_read(struct ev *e)
{
	struct input_event buf[256];
	/* Bound one interval's work: a file larger than this waits for the next. */
	for (int round = 0; round < 4096; round++) {
		size_t have = e->npart;
		memcpy(buf, e->part, have);
		ssize_t n = read(e->fd, (char *)buf + have, sizeof(buf) - have);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -1;
		}
		if (n == 0)
			return 0;
		size_t total = have + (size_t)n;
		size_t whole = total / sizeof(struct input_event);
		for (size_t i = 0; i < whole; i++)
			on_event(e, &buf[i]);
		e->npart = total - whole * sizeof(struct input_event);
		memcpy(e->part, (char *)buf + whole * sizeof(struct input_event), e->npart);
	}
	return 0;
}

static int ev_collect(struct ipk_source *src, double ts, double interval, struct ipk_sample_set *set,
		      const struct ipk_diag *diag, struct ipk_err *err)
{
	struct ev *e = src->priv;
	if (e->fd < 0) {
		struct ipk_err oe = { 0 };
		int is_dev;
		int fd = ev_open(e->path, &is_dev, &oe);
		if (fd < 0)
			return 0; /* still gone: quiet */
		e->fd = fd;
		e->is_dev = is_dev;
		e->npart = 0;
		e->dropping = 0;
		e->abs_known = 0;
		frame_reset(e);
		ev_seed_abs(e);
		ipk_diagf(diag, 1, "input device '%s' is back", e->path);
	}
	memset(&e->c, 0, sizeof(e->c));
	long dropped = e->dropped;
	if (ev_read(e) < 0) {
		int en = errno;
		close(e->fd);
		e->fd = -1;
		if (en == ENODEV) {
			ipk_diagf(diag, 0, "input device '%s' is gone: %s; waiting for it to come back", e->path,
				  strerror(en));
			return 0;
		}
		return ipk_err_set(err, IPK_EXIT_IOERR, "cannot read input device '%s': %s", e->path, strerror(en));
	}
	if (e->dropped > dropped)
		ipk_diagf(diag, 2, "input device '%s': kernel buffer overflowed, events dropped (SYN_DROPPED)", e->path);
	struct ipk_sample s;
	ipk_sample_init(&s, e->session, "evdev", ts, interval);
	ipk_sample_set_field(&s, IPK_F_EVENTS, e->c.events);
	ipk_sample_set_field(&s, IPK_F_KEYS, e->c.keys);
	ipk_sample_set_field(&s, IPK_F_CLICKS, e->c.clicks);
	ipk_sample_set_field(&s, IPK_F_SCROLLS, e->c.scrolls);
	ipk_sample_set_field(&s, IPK_F_MOUSE_PX, e->c.px);
	if (e->last_input > 0)
		ipk_sample_set_field(&s, IPK_F_INPUT_AGE, fmax(0, ts - e->last_input));
	if (ipk_sample_set_add(set, &s) < 0)
		return ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
	return 0;
}

static void ev_free(struct ipk_source *src)
{
	struct ev *e = src->priv;
	if (!e)
		return;
	if (e->fd >= 0)
		close(e->fd);
	free(e->path);
	free(e->session);
	free(e);
	src->priv = NULL;
}

static const struct ipk_source_ops ev_ops = {
	.name = "evdev",
	.finite = 0,
	.live = 1,
	.collect = ev_collect,
	.start = NULL,
	.free = ev_free,
};

struct ipk_source *ipk_source_evdev_new(const struct ipk_evdev_opts *o, struct ipk_err *err)
{
	if (!o->path || !*o->path) {
		ipk_err_set(err, IPK_EXIT_USAGE, "invalid input device '': empty path");
		return NULL;
	}
	int is_dev = 0;
	int fd = ev_open(o->path, &is_dev, err);
	if (fd < 0)
		return NULL;
	struct ipk_source *src = calloc(1, sizeof(*src));
	struct ev *e = calloc(1, sizeof(*e));
	char host[256] = "";
	if (o->session && *o->session)
		snprintf(host, sizeof(host), "%s", o->session);
	else if (gethostname(host, sizeof(host)) < 0 || !host[0])
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	if (!src || !e || !(e->path = strdup(o->path)) || !(e->session = strdup(host)) ||
	    asprintf(&src->label, "evdev %s", o->path) < 0) {
		close(fd);
		if (e) {
			free(e->path);
			free(e->session);
		}
		free(e);
		free(src);
		ipk_err_set(err, IPK_EXIT_OSERR, "out of memory");
		return NULL;
	}
	e->fd = fd;
	e->is_dev = is_dev;
	ev_seed_abs(e);
	src->ops = &ev_ops;
	src->priv = e;
	return src;
}
