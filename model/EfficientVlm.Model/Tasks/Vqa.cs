using EfficientVlm.Model.Modules;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace EfficientVlm.Model.Tasks;

/// <summary>
/// Answers for a VQA batch: every (question, answer) pair to train on, with its weight (VQAv2: the
/// share of the 10 annotators who gave it). ids [A, La] are [CLS] answer [SEP] then padding.
/// </summary>
public sealed record VqaAnswers(Tensor Ids, Tensor Padding, Tensor Owner, Tensor Weight);

/// <summary>Generative VQA (method.md section 2): the answer decoder scores answers token by token.</summary>
public static class Vqa
{
    /// <summary>Question states: image [B, 3, H, W] + question ids [B, T] -> fused [B, T, D].</summary>
    public static Tensor EncodeQuestion(VlmModel model, Tensor images, Tensor ids, Tensor padding, ModelGates? gates = null) =>
        EncodeQuestionStreams(model, images, ids, padding, gates, collect: false).Fusion.Last;

    /// <summary>As <see cref="EncodeQuestion"/>, with each stream's output (<paramref name="collect"/>: every state and attention map, for KD).</summary>
    public static (EncoderOutput Vision, EncoderOutput Text, EncoderOutput Fusion) EncodeQuestionStreams(VlmModel model, Tensor images,
        Tensor ids, Tensor padding, ModelGates? gates = null, bool collect = true)
    {
        var vision = model.EncodeImage(images, gates, collect);
        var text = model.EncodeText(ids, padding, gates, collect);
        return (vision, text, model.Fuse(text.Last, padding, vision.Last, gates, collect));
    }

    /// <summary>Next-token logits of each answer: question states [Q, T, D] -> [A, La-1, V] (position i predicts token i+1).</summary>
    public static Tensor AnswerLogits(VlmModel model, Tensor questionStates, Tensor questionPadding, Tensor answerIds,
        Tensor answerPadding, ModelGates? gates = null) =>
        AnswerLogitsStreams(model, questionStates, questionPadding, answerIds, answerPadding, gates, collect: false).Logits;

    /// <summary>As <see cref="AnswerLogits"/>, with the decoder's output (<paramref name="collect"/>: every state and attention map, for KD).</summary>
    public static (Tensor Logits, EncoderOutput Decoder) AnswerLogitsStreams(VlmModel model, Tensor questionStates, Tensor questionPadding,
        Tensor answerIds, Tensor answerPadding, ModelGates? gates = null, bool collect = true)
    {
        var decoded = model.DecodeAnswer(answerIds, answerPadding, questionStates, questionPadding, gates, collect); // (A, La, D)
        return (model.LmLogits(decoded.Last.narrow(1, 0, answerIds.shape[1] - 1)), decoded);
    }

    /// <summary>Which predicted positions are real answer tokens: answer padding [A, La] -> [A, La-1].</summary>
    public static Tensor PredictedTokens(Tensor answerPadding) => answerPadding.narrow(1, 1, answerPadding.shape[1] - 1);

    /// <summary>Sum over answer tokens of -log p(token | previous, question), from <see cref="AnswerLogits"/> -> [A].</summary>
    public static Tensor AnswerNll(Tensor logits, Tensor answerIds, Tensor answerPadding)
    {
        var targets = answerIds.narrow(1, 1, answerIds.shape[1] - 1);                  // (A, La-1)
        var mask = PredictedTokens(answerPadding).to(logits.dtype);
        var nll = functional.cross_entropy(logits.reshape(-1, logits.shape[2]), targets.reshape(-1), reduction: Reduction.None)
            .view(targets.shape).mul(mask);
        return nll.sum(1);
    }

    /// <summary>Sum over answer tokens of -log p(token | previous, question): question states [Q, T, D] -> [A]</summary>
    public static Tensor AnswerNll(VlmModel model, Tensor questionStates, Tensor questionPadding, Tensor answerIds,
        Tensor answerPadding, ModelGates? gates = null) =>
        AnswerNll(AnswerLogits(model, questionStates, questionPadding, answerIds, answerPadding, gates), answerIds, answerPadding);

    /// <summary>Answer NLL [A] weighted by each answer's share, summed and averaged over the <paramref name="questions"/>.</summary>
    public static Tensor WeightedLoss(Tensor nll, VqaAnswers answers, long questions) => nll.mul(answers.Weight).sum().div(questions);

    /// <summary>Weighted answer negative log-likelihood, averaged over questions.</summary>
    public static Tensor Loss(VlmModel model, Tensor images, Tensor ids, Tensor padding, VqaAnswers answers, ModelGates? gates = null)
    {
        var questions = EncodeQuestion(model, images, ids, padding, gates);
        var nll = AnswerNll(model, questions.index_select(0, answers.Owner), padding.index_select(0, answers.Owner),
            answers.Ids, answers.Padding, gates);
        return WeightedLoss(nll, answers, ids.shape[0]);
    }

    /// <summary>
    /// Ranks a closed answer list: first-token log-probability of every answer, keep the best
    /// <paramref name="k"/>, rescore those by the full answer's log-likelihood, take the best.
    /// question states [B, T, D]; answer list ids [A, La] -> index into the list [B], and its log-likelihood [B].
    /// </summary>
    public static (Tensor Best, Tensor Score) Rank(VlmModel model, Tensor questionStates, Tensor questionPadding,
        Tensor answerIds, Tensor answerPadding, int k, ModelGates? gates = null)
    {
        long b = questionStates.shape[0], a = answerIds.shape[0];
        k = (int)Math.Min(k, a);
        var start = answerIds.narrow(1, 0, 1).narrow(0, 0, 1).expand(b, 1);             // (B, 1): [CLS]
        var first = model.DecodeAnswer(start, torch.ones_like(start), questionStates, questionPadding, gates).Last;
        var firstLogProbs = functional.log_softmax(model.LmLogits(first.select(1, 0)), -1); // (B, V)
        var firstTokens = answerIds.select(1, 1);                                          // (A)
        var firstScores = firstLogProbs.index_select(1, firstTokens);                      // (B, A)
        var (_, top) = firstScores.topk(k, dim: 1);                                         // (B, K)

        var flat = top.reshape(-1);                                                         // (B*K)
        var owner = torch.arange(b, device: questionStates.device).repeat_interleave(k);
        var nll = AnswerNll(model, questionStates.index_select(0, owner), questionPadding.index_select(0, owner),
            answerIds.index_select(0, flat), answerPadding.index_select(0, flat), gates).view(b, k);
        var (bestScore, bestInTop) = nll.neg().max(1);
        var best = top.gather(1, bestInTop.view(-1, 1)).view(-1);
        return (best, bestScore);
    }
}
