// lane_groups: reductions over a lane group, 8 consecutive invocations inside one subgroup,
// for kernels that run where the "subgroups" feature is present (the backend checks once
// that subgroups hold aligned groups of 8: linear_subgroups.wgsl's probe_lane_groups).
//   lane_group_sum(v): the sum of v over the caller's lane group, in every lane of it,
//   through subgroupShuffleXor over lanes 4, 2, 1 (which stays inside the aligned group).
// No bindings and no entry point: included by the kernels that use it.

fn lane_group_sum(v: f32) -> f32 {
    var s = v + subgroupShuffleXor(v, 4u);
    s += subgroupShuffleXor(s, 2u);
    return s + subgroupShuffleXor(s, 1u);
}
