# vmbusprobe drives VMBus and kmcl against whatever host is there.
APP_MODULES := kmcl
