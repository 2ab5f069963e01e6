/*
 * A main() for replaying fuzz inputs without libFuzzer (e.g. a harness built with gcc and the
 * sanitizers): every file named on the command line, or every regular file in a named directory, is
 * read and passed to LLVMFuzzerTestOneInput. With no arguments, standard input is one input.
 *
 *   gcc -std=gnu11 -g -O1 -Wall -Wextra -Werror -DHOSTED -I. -fsanitize=address,undefined \
 *       -fno-sanitize-recover=all test/fuzz/fuzz_acpi.c test/fuzz/standalone_main.c kernel/...c
 *   ./a.out test/fuzz/corpus/acpi
 *
 * Exit status 0 when every input ran (a harness reports failures by aborting).
 */
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static unsigned long inputs;

/* Reads the whole stream; the buffer is exactly `size` bytes so over-reads are caught by ASan. */
static int run_stream(FILE *f, const char *name)
{
    size_t cap = 4096, size = 0;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return -1;
    for (;;) {
        if (size == cap) {
            cap *= 2;
            uint8_t *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                return -1;
            }
            buf = nb;
        }
        size_t n = fread(buf + size, 1, cap - size, f);
        size += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        fprintf(stderr, "%s: read error\n", name);
        free(buf);
        return -1;
    }
    uint8_t *exact = malloc(size ? size : 1);
    if (!exact) {
        free(buf);
        return -1;
    }
    memcpy(exact, buf, size);
    free(buf);
    LLVMFuzzerTestOneInput(exact, size);
    free(exact);
    inputs++;
    return 0;
}

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    int r = run_stream(f, path);
    fclose(f);
    return r;
}

static int run_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return run_file(path);
    DIR *d = opendir(path);
    if (!d) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    int r = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        size_t n = strlen(path) + strlen(e->d_name) + 2;
        char *full = malloc(n);
        if (!full) {
            r = -1;
            break;
        }
        snprintf(full, n, "%s/%s", path, e->d_name);
        if (stat(full, &st) == 0 && S_ISREG(st.st_mode) && run_file(full) != 0)
            r = -1;
        free(full);
    }
    closedir(d);
    return r;
}

int main(int argc, char **argv)
{
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    int r = 0;
    if (argc < 2) {
        r = run_stream(stdin, "<stdin>");
    } else {
        for (int i = 1; i < argc; i++)
            if (run_path(argv[i]) != 0)
                r = -1;
    }
    fprintf(stderr, "%lu input(s) run\n", inputs);
    return r == 0 ? 0 : 1;
}
