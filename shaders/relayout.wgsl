// relayout: converts weight data written by the host into the layout and storage type the
// kernels read, once, at upload.
//   O[r, c] = S[c, r] (transpose = 1: a Conv1D weight [K, N] becomes [N, K]) or S[r, c],
//   for r < rows, c < cols; S holds float32, float16 or bfloat16 values packed in u32 words.
//   Each output row is padded with zeros to `out_stride` u32 words: float32 output is one
//   value per word (rows padded to 4 values), float16 output packs two values per word
//   (rows padded to 8 values), so the linear kernels can read whole vec4<u32>.
// Bindings: 0 uniform Params, 1 source words (read), 2 output words (read_write).
// Workgroup: 256 invocations, one output word each; the grid is flattened over x and y.

struct Params {
    rows: u32,        // output rows
    cols: u32,        // output columns (values, before padding)
    out_stride: u32,  // u32 words per output row
    src_dtype: u32,   // 0 float32, 1 float16, 2 bfloat16
    out_f16: u32,     // 1: pack two float16 values per output word
    transpose: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

fn source_value(r: u32, c: u32) -> f32 {
    if (c >= p.cols) {
        return 0.0;
    }
    var i = r * p.cols + c;
    if (p.transpose == 1u) {
        i = c * p.rows + r;
    }
    if (p.src_dtype == 0u) {
        return bitcast<f32>(src[i]);
    }
    let word = src[i >> 1u];
    let odd = (i & 1u) == 1u;
    if (p.src_dtype == 1u) {
        let pair = unpack2x16float(word);
        return select(pair.x, pair.y, odd);
    }
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, odd));
}

@compute @workgroup_size(256)
fn relayout(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let word = (wid.y * nwg.x + wid.x) * 256u + lid;
    if (word >= p.rows * p.out_stride) {
        return;
    }
    let r = word / p.out_stride;
    let j = word % p.out_stride;
    if (p.out_f16 == 1u) {
        dst[word] = pack2x16float(vec2<f32>(source_value(r, 2u * j), source_value(r, 2u * j + 1u)));
    } else {
        dst[word] = bitcast<u32>(source_value(r, j));
    }
}
