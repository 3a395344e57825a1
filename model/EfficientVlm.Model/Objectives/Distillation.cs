using EfficientVlm.Model.Modules;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace EfficientVlm.Model.Objectives;

/// <summary>
/// The knowledge-distillation terms of method.md section 3, each a small function. Layer mapping for
/// a teacher with r times the student's layers: student hidden state i (index 0 = embeddings) with
/// teacher hidden state r*i; student attention map of layer i with teacher layer r*i + r - 1
/// (r = 2: hidden 2i, attention 2i+1; r = 1: identity).
/// </summary>
public static class Distillation
{
    /// <summary>
    /// Sum over mapped hidden states of the mean squared error over real tokens. states [B, T, D]; tokenMask [B, T] or null.
    /// <paramref name="group"/> layers form one block (NLVR2's fusion: 2, one layer per image); only the states between
    /// blocks are compared, student block boundary j with the teacher's r*j.
    /// </summary>
    public static Tensor HiddenMse(IReadOnlyList<Tensor> student, IReadOnlyList<Tensor> teacher, Tensor? tokenMask, bool skipLast = false,
        int group = 1)
    {
        int ratio = Ratio(student.Count - 1, teacher.Count - 1);
        int pairs = student.Count - (skipLast ? 1 : 0);
        Tensor total = torch.zeros(Array.Empty<long>(), device: student[0].device);
        for (int i = 0; i < pairs; i += group)
            total = total.add(MaskedMean(student[i].sub(teacher[ratio * i].detach()).pow(2).mean([-1]), tokenMask));
        return total;
    }

    /// <summary>
    /// The teacher layer whose attention map student layer <paramref name="layer"/> learns: within blocks of
    /// <paramref name="group"/> layers, student block j maps to teacher block r*j + r - 1, at the same place in the block
    /// (so an NLVR2 layer that attends to image 1 learns from a teacher layer that attends to image 1).
    /// </summary>
    public static int AttentionTeacherLayer(int layer, int ratio, int group = 1) =>
        (ratio * (layer / group) + ratio - 1) * group + layer % group;

    /// <summary>
    /// Sum over mapped layers of the squared error of post-softmax attention probabilities, summed over
    /// the source positions (scaled by source length) and averaged over heads and real query tokens.
    /// maps [B, nh, T, S]; a layer the student has pruned to no heads (null map) is skipped. <paramref name="group"/>: see
    /// <see cref="AttentionTeacherLayer"/>.
    /// </summary>
    public static Tensor AttentionMse(IReadOnlyList<Tensor?> student, IReadOnlyList<Tensor?> teacher, Tensor? tokenMask, int group = 1)
    {
        int ratio = Ratio(student.Count, teacher.Count);
        Tensor? total = null;
        for (int i = 0; i < student.Count; i++)
        {
            var s = student[i];
            var t = teacher[AttentionTeacherLayer(i, ratio, group)];
            if (s is null || t is null) continue;
            if (s.shape[1] != t.shape[1]) s = s.mean([1], keepdim: true); // pruned student: compare head-averaged maps
            if (s.shape[1] != t.shape[1]) t = t.mean([1], keepdim: true);
            var perQuery = s.sub(t.detach()).pow(2).sum(-1).mean([1]);                       // (B, T)
            var term = MaskedMean(perQuery, tokenMask);
            total = total is null ? term : total.add(term);
        }
        return total ?? torch.zeros(1, device: student.FirstOrDefault(m => m is not null)?.device ?? torch.CPU).squeeze();
    }

    /// <summary>KL(softmax(t/T) || softmax(s/T)) averaged over rows; logits [M, C]. Padding rows are never passed in.</summary>
    public static Tensor LogitKl(Tensor student, Tensor teacher, double temperature = 1.0)
    {
        if (student.shape[0] == 0) return student.sum().mul(0);
        var logP = functional.log_softmax(student.div(temperature), -1);
        var q = functional.softmax(teacher.detach().div(temperature), -1);
        var logQ = functional.log_softmax(teacher.detach().div(temperature), -1);
        return q.mul(logQ.sub(logP)).sum(-1).mean().mul(temperature * temperature);
    }

    private static Tensor MaskedMean(Tensor values, Tensor? mask)
    {
        if (mask is null) return values.mean();
        var m = mask.to(values.dtype);
        return values.mul(m).sum().div(m.sum().clamp_min(1));
    }

    private static int Ratio(int student, int teacher)
    {
        if (student <= 0) return 1;
        if (teacher % student != 0)
            throw new ArgumentException($"The teacher's {teacher} layers are not a multiple of the student's {student}.");
        return teacher / student;
    }

    /// <summary>
    /// L_kd of general distillation: ITM and MLM logit KL + text (attention + hidden) + vision
    /// (attention + 0.1 hidden, the last vision pair skipped) + fusion (attention + hidden), over the
    /// ITM pairs (positive and negative) and the MLM pass. Both results must come from the same
    /// samples (negatives, masks) and be collected.
    /// </summary>
    public static (Tensor Total, Dictionary<string, Tensor> Parts) GeneralKd(PretrainResult student, PretrainResult teacher, Tensor padding)
    {
        var s = student.Streams ?? throw new ArgumentException("The student result was not collected.");
        var t = teacher.Streams ?? throw new ArgumentException("The teacher result was not collected.");
        if (s.MlmText is null || s.MlmFusion is null || t.MlmText is null || t.MlmFusion is null)
            throw new ArgumentException("General distillation needs the MLM pass of both models.");
        var parts = new Dictionary<string, Tensor>
        {
            ["kd_itm"] = LogitKl(student.ItmLogits, teacher.ItmLogits),
            ["kd_mlm"] = LogitKl(student.MlmLogits, teacher.MlmLogits),
            ["kd_text"] = AttentionMse(s.Text.SelfAttentions, t.Text.SelfAttentions, padding)
                .add(HiddenMse(s.Text.Hidden, t.Text.Hidden, padding))
                .add(AttentionMse(s.MlmText.SelfAttentions, t.MlmText.SelfAttentions, padding))
                .add(HiddenMse(s.MlmText.Hidden, t.MlmText.Hidden, padding)),
            ["kd_vision"] = AttentionMse(s.Vision.SelfAttentions, t.Vision.SelfAttentions, null)
                .add(HiddenMse(s.Vision.Hidden, t.Vision.Hidden, null, skipLast: true).mul(0.1)),
            ["kd_fusion"] = AttentionMse(s.ItmFusion.SelfAttentions, t.ItmFusion.SelfAttentions, s.ItmPadding)
                .add(HiddenMse(s.ItmFusion.Hidden, t.ItmFusion.Hidden, s.ItmPadding))
                .add(AttentionMse(s.MlmFusion.SelfAttentions, t.MlmFusion.SelfAttentions, padding))
                .add(HiddenMse(s.MlmFusion.Hidden, t.MlmFusion.Hidden, padding)),
        };
        var total = parts.Values.Aggregate((a, b) => a.add(b));
        return (total, parts);
    }

    /// <summary>
    /// The stream terms of KD during pruning (method.md section 4: the building blocks of section 3, with the fusion
    /// cross-attention maps distilled too): vision (attention + 0.1 hidden, the last pair skipped), text (attention +
    /// hidden), fusion (self- and cross-attention + hidden) and, for VQA, the answer decoder (the same three). The task's
    /// logit KD is added by the caller. Student and teacher must come from the same inputs.
    /// </summary>
    public static (Tensor Total, Dictionary<string, Tensor> Parts) StreamKd(TaskStreams student, TaskStreams teacher)
    {
        var parts = new Dictionary<string, Tensor>
        {
            ["kd_vision"] = AttentionMse(student.Vision.SelfAttentions, teacher.Vision.SelfAttentions, null)
                .add(HiddenMse(student.Vision.Hidden, teacher.Vision.Hidden, null, skipLast: true).mul(0.1)),
            ["kd_text"] = AttentionMse(student.Text.SelfAttentions, teacher.Text.SelfAttentions, student.TextPadding)
                .add(HiddenMse(student.Text.Hidden, teacher.Text.Hidden, student.TextPadding)),
            ["kd_fusion"] = Block(student.Fusion, teacher.Fusion, student.FusionPadding, student.FusionGroup),
        };
        if (student.Decoder is { } decoder)
            parts["kd_decoder"] = Block(decoder, teacher.Decoder ?? throw new ArgumentException("The teacher pass has no decoder streams."),
                student.DecoderPadding, 1);
        return (parts.Values.Aggregate((a, b) => a.add(b)), parts);
    }

    private static Tensor Block(EncoderOutput student, EncoderOutput teacher, Tensor? padding, int group) =>
        AttentionMse(student.SelfAttentions, teacher.SelfAttentions, padding, group)
            .add(AttentionMse(student.CrossAttentions, teacher.CrossAttentions, padding, group))
            .add(HiddenMse(student.Hidden, teacher.Hidden, padding, group: group));
}

/// <summary>
/// What a task's forward pass keeps for KD during pruning (collected streams): every stream's hidden states and attention
/// maps, with the padding of its tokens. <see cref="FusionGroup"/> is 2 for NLVR2 (fusion layers alternate images).
/// </summary>
public sealed record TaskStreams(EncoderOutput Vision, EncoderOutput Text, Tensor TextPadding, EncoderOutput Fusion, Tensor FusionPadding,
    int FusionGroup = 1, EncoderOutput? Decoder = null, Tensor? DecoderPadding = null);
