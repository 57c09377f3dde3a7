/* Prints the layout of every public struct: one line per field with its
 * offset and size, and one per struct with its size. check_layout.sh
 * compares the output with the baseline lib/owlore.layout, so a field that
 * moves, changes size or disappears fails the test (docs/abi.md). */
#include <owlore/owlore.h>

#include <stddef.h>
#include <stdio.h>

#define FIELD(type, field)                                                     \
    printf("%s.%s %zu %zu\n", #type, #field, offsetof(type, field),            \
           sizeof(((type *)0)->field))
#define SIZE(type) printf("%s %zu\n", #type, sizeof(type))

int main(void)
{
    SIZE(owl_tensor);
    FIELD(owl_tensor, data);
    FIELD(owl_tensor, rows);
    FIELD(owl_tensor, cols);
    FIELD(owl_tensor, row_stride);
    FIELD(owl_tensor, dtype);
    FIELD(owl_tensor, flags);

    SIZE(owl_context_options);
    FIELD(owl_context_options, struct_size);
    FIELD(owl_context_options, backend);
    FIELD(owl_context_options, device);
    FIELD(owl_context_options, num_threads);
    FIELD(owl_context_options, reserved);

    SIZE(owl_esd_result);
    FIELD(owl_esd_result, struct_size);
    FIELD(owl_esd_result, alpha);
    FIELD(owl_esd_result, xmin);
    FIELD(owl_esd_result, ks_distance);
    FIELD(owl_esd_result, xmin_index);
    FIELD(owl_esd_result, num_eigs);

    SIZE(owl_sampler_options);
    FIELD(owl_sampler_options, struct_size);
    FIELD(owl_sampler_options, num_layers);
    FIELD(owl_sampler_options, gamma);
    FIELD(owl_sampler_options, period);
    FIELD(owl_sampler_options, seed);
    FIELD(owl_sampler_options, weight_mode);
    FIELD(owl_sampler_options, law);
    FIELD(owl_sampler_options, weights);

    SIZE(owl_galore_options);
    FIELD(owl_galore_options, struct_size);
    FIELD(owl_galore_options, rows);
    FIELD(owl_galore_options, cols);
    FIELD(owl_galore_options, rank);
    FIELD(owl_galore_options, update_gap);
    FIELD(owl_galore_options, scale);
    FIELD(owl_galore_options, proj_type);
    FIELD(owl_galore_options, svd_method);
    FIELD(owl_galore_options, oversample);
    FIELD(owl_galore_options, power_iters);
    FIELD(owl_galore_options, seed);

    SIZE(owl_adamw_options);
    FIELD(owl_adamw_options, struct_size);
    FIELD(owl_adamw_options, beta1);
    FIELD(owl_adamw_options, beta2);
    FIELD(owl_adamw_options, eps);
    FIELD(owl_adamw_options, weight_decay);
    FIELD(owl_adamw_options, semantics);
    FIELD(owl_adamw_options, moment_dtype);
    FIELD(owl_adamw_options, on_refresh);
    FIELD(owl_adamw_options, rounding);
    FIELD(owl_adamw_options, seed);
    SIZE(owl_optimizer_options);
    FIELD(owl_optimizer_options, struct_size);
    FIELD(owl_optimizer_options, method);
    FIELD(owl_optimizer_options, frozen_policy);
    FIELD(owl_optimizer_options, num_layers);
    FIELD(owl_optimizer_options, sampler);
    FIELD(owl_optimizer_options, galore);
    FIELD(owl_optimizer_options, adamw);
    FIELD(owl_optimizer_options, max_grad_norm);
    FIELD(owl_optimizer_options, refresh_on_activation);
    FIELD(owl_optimizer_options, reserved);

    SIZE(owl_memory_usage);
    FIELD(owl_memory_usage, struct_size);
    FIELD(owl_memory_usage, device_moments);
    FIELD(owl_memory_usage, device_projectors);
    FIELD(owl_memory_usage, device_workspace);
    FIELD(owl_memory_usage, host_moments);
    FIELD(owl_memory_usage, host_projectors);
    FIELD(owl_memory_usage, host_workspace);

    SIZE(owl_model_shape);
    FIELD(owl_model_shape, struct_size);
    FIELD(owl_model_shape, num_layers);
    FIELD(owl_model_shape, hidden);
    FIELD(owl_model_shape, intermediate);
    FIELD(owl_model_shape, heads);
    FIELD(owl_model_shape, kv_heads);
    FIELD(owl_model_shape, vocab);
    FIELD(owl_model_shape, weight_dtype);
    FIELD(owl_model_shape, grad_dtype);
    FIELD(owl_model_shape, tied_embeddings);
    FIELD(owl_model_shape, reserved);

    SIZE(owl_memory_plan);
    FIELD(owl_memory_plan, struct_size);
    FIELD(owl_memory_plan, weights);
    FIELD(owl_memory_plan, gradients);
    FIELD(owl_memory_plan, optimizer_state);
    FIELD(owl_memory_plan, projectors);
    FIELD(owl_memory_plan, workspace);
    FIELD(owl_memory_plan, total);

    return 0;
}
