using System.Text.RegularExpressions;
using EfficientVlm.Model.Config;
using EfficientVlm.Model.Modules;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Model.Training;

/// <summary>
/// Builds the compact student from the teacher (method.md section 3): for a teacher with r times
/// the student's layers, student layer i of every stack starts as teacher layer r*i + r - 1 (r = 2:
/// layers 1, 3, 5, ...); embeddings and heads are copied whole.
/// </summary>
public static partial class StudentInit
{
    [GeneratedRegex(@"^(vision|text|fusion|decoder)\.layers\.(\d+)\.(.*)$")]
    private static partial Regex LayerKey();

    public static VlmModel FromTeacher(VlmModel teacher, VlmConfig studentConfig)
    {
        var t = teacher.Config;
        foreach (var stack in Enum.GetValues<Stack>())
        {
            int ls = studentConfig.Layers(stack), lt = t.Layers(stack);
            if (ls > 0 && lt % ls != 0)
                throw new ArgumentException($"The teacher's {lt} {stack} layers are not a multiple of the student's {ls}.");
        }
        if (studentConfig with { VisionLayers = t.VisionLayers, TextLayers = t.TextLayers, FusionLayers = t.FusionLayers,
                DecoderLayers = t.DecoderLayers, Name = t.Name } != t)
            throw new ArgumentException("Student and teacher may differ only in depth.");

        var device = teacher.parameters().First().device;
        var student = Runtime.Scopes.Keep(new VlmModel(studentConfig, device));
        var source = teacher.state_dict();
        using (torch.no_grad())
        {
            foreach (var (name, tensor) in student.state_dict())
            {
                var match = LayerKey().Match(name);
                string from = name;
                if (match.Success)
                {
                    var stack = Enum.Parse<Stack>(match.Groups[1].Value, ignoreCase: true);
                    int ratio = t.Layers(stack) / studentConfig.Layers(stack);
                    int layer = int.Parse(match.Groups[2].Value);
                    from = $"{match.Groups[1].Value}.layers.{ratio * layer + ratio - 1}.{match.Groups[3].Value}";
                }
                tensor.copy_(source[from]);
            }
        }
        return student;
    }
}
