/* A program outside the project, built only from the installed header and
 * pkg-config file: it must compile as C99 and run against the installed
 * shared library. It exits 0 when everything it tries works. */
#include <owlore/owlore.h>

#include <stdio.h>
#include <string.h>

static int failures = 0;

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "consumer: FAIL: %s\n", what);
        failures++;
    }
}

int main(void)
{
    /* The header we compiled against and the library we loaded agree. */
    printf("consumer: header %s (%d), library %s (%u)\n", OWL_VERSION_STRING,
           (int)OWL_VERSION_NUMBER, owl_version_string(),
           (unsigned)owl_version_number());
    check(owl_version_number() == OWL_VERSION_NUMBER, "version numbers agree");
    check(strcmp(owl_version_string(), OWL_VERSION_STRING) == 0,
          "version strings agree");

    check(strcmp(owl_status_name(OWL_OK), "OWL_OK") == 0, "name of OWL_OK");
    check(strcmp(owl_status_name(OWL_ERR_SHAPE), "OWL_ERR_SHAPE") == 0,
          "name of OWL_ERR_SHAPE");
    check(strlen(owl_status_string(OWL_ERR_NONFINITE)) > 0,
          "sentence of OWL_ERR_NONFINITE");
    check(owl_backend_available(OWL_BACKEND_CPU) == 1, "CPU backend built in");

    owl_context_options copts;
    check(owl_context_options_init(&copts, sizeof copts) == OWL_OK,
          "context options init");
    copts.num_threads = 2;
    owl_context *ctx = NULL;
    owl_status s = owl_context_create(&ctx, &copts);
    check(s == OWL_OK && ctx != NULL, "context create");
    if (ctx == NULL)
        return 1;
    check(owl_context_num_threads(ctx) == 2, "context has 2 threads");
    check(strcmp(owl_context_last_error(ctx), "") == 0, "no error yet");

    /* A sampler step: 8 layers, exactly 2 active (the default law). */
    owl_sampler_options sopts;
    s = owl_sampler_options_init(&sopts, sizeof sopts);
    owl_sampler *sampler = NULL;
    if (s == OWL_OK) {
        sopts.num_layers = 8;
        sopts.gamma = 2;
        sopts.period = 5;
        s = owl_sampler_create(ctx, &sopts, &sampler);
    }
    if (s == OWL_OK) {
        uint8_t mask[8];
        uint64_t active = 0;
        int32_t resampled = -1;
        s = owl_sampler_step(sampler, 0, mask, &active, &resampled);
        if (s == OWL_OK) {
            int count = 0;
            for (int i = 0; i < 8; i++)
                count += mask[i] == 1;
            printf("consumer: sampler step 0: %d of 8 layers active\n", count);
            check(count == 2 && active == 2, "exactly gamma layers active");
            check(resampled == 1, "step 0 resamples");
        }
    }
    if (s == OWL_ERR_UNSUPPORTED)
        printf("consumer: sampler not built yet (%s)\n", owl_status_name(s));
    else
        check(s == OWL_OK, "sampler create and step");
    owl_sampler_free(sampler);
    owl_context_free(ctx);

    if (failures == 0)
        printf("consumer: OK\n");
    return failures == 0 ? 0 : 1;
}
