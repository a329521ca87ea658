/* pjproject build options for the branchline gateway (copied into
 * pjlib/include/pj/config_site.h by scripts/pjsua2/build.sh).
 * Sized for a gateway: every analog port plus consult and waiting legs, a trunk
 * registration per line, and a select() ioqueue that stays within FD_SETSIZE. */
#define PJSUA_MAX_CALLS             64
#define PJSUA_MAX_ACC               16
#define PJSUA_MAX_PLAYERS           64
#define PJSUA_MAX_RECORDERS         64
#define PJSUA_MAX_CONF_PORTS        254
#define PJ_IOQUEUE_MAX_HANDLES      1024
#define PJMEDIA_CONF_USE_SWITCH_BOARD 0
#define PJMEDIA_HAS_VIDEO           0
#define PJ_LOG_MAX_LEVEL            5
#define PJMEDIA_HAS_SRTP            1
