using System.Text.Json;

namespace EfficientVlm.Model.Data.Readers;

/// <summary>Readers of VQA files: VQAv2 questions + annotations, and the X-VLM/ALBEF vqa_*.json.</summary>
public static class VqaReaders
{
    /// <summary>
    /// VQAv2: the questions file (data_subtype, questions[] {image_id, question, question_id}) and,
    /// except for test, the annotations file (annotations[] {question_id, answers[] {answer}} and, where
    /// present, multiple_choice_answer, question_type, answer_type; the other fields may be missing).
    /// Images: <c>COCO_&lt;data_subtype&gt;_&lt;image_id:012d&gt;</c> with .jpg or .png, in
    /// <paramref name="imageRoot"/> or its <c>&lt;data_subtype&gt;</c> subfolder.
    /// </summary>
    public static ReadResult<VqaItem> ReadVqaV2(string questionsPath, string? annotationsPath, string imageRoot, bool requireImages = true)
    {
        using var questionsDoc = JsonFiles.Parse(questionsPath);
        var root = JsonFiles.Root(questionsDoc, questionsPath);
        var subtype = root.String("data_subtype");

        var answers = new Dictionary<long, (List<string> Answers, string? Mc, string? Qt, string? At)>();
        if (annotationsPath is not null)
        {
            using var annotationsDoc = JsonFiles.Parse(annotationsPath);
            foreach (var a in JsonFiles.Root(annotationsDoc, annotationsPath).Records("annotations"))
            {
                long qid = a.Long("question_id");
                var list = new List<string>();
                foreach (var answer in a.Records("answers")) list.Add(answer.String("answer"));
                if (list.Count == 0) throw a.Error("has an empty 'answers' list");
                if (!answers.TryAdd(qid, (list, a.OptionalString("multiple_choice_answer"), a.OptionalString("question_type"), a.OptionalString("answer_type"))))
                    throw a.Error($"repeats question_id {qid}");
            }
        }

        var items = new List<VqaItem>();
        var warnings = new List<string>();
        int unanswered = 0;
        foreach (var q in root.Records("questions"))
        {
            long qid = q.Long("question_id"), imageId = q.Long("image_id");
            var text = q.String("question");
            var name = $"COCO_{subtype}_{imageId:D12}";
            var image = ImagePaths.Resolve(requireImages, q.Where,
                Path.Combine(imageRoot, name + ".jpg"), Path.Combine(imageRoot, name + ".png"),
                Path.Combine(imageRoot, subtype, name + ".jpg"), Path.Combine(imageRoot, subtype, name + ".png"));
            if (answers.TryGetValue(qid, out var a))
            {
                items.Add(new VqaItem(qid, imageId, image, text, a.Answers, a.Mc, a.Qt, a.At));
            }
            else
            {
                if (annotationsPath is not null) unanswered++;
                items.Add(new VqaItem(qid, imageId, image, text, []));
            }
        }
        if (unanswered > 0) warnings.Add($"{annotationsPath}: {unanswered} questions have no annotation.");
        return new(items, warnings);
    }

    /// <summary>
    /// X-VLM / ALBEF vqa_*.json: [{question_id, question, answer: [..] (VQA) or "..." (Visual Genome),
    /// image, dataset}]; answer absent in test files. Image paths relative to <paramref name="imageRoot"/>.
    /// </summary>
    public static ReadResult<VqaItem> ReadXvlm(string path, string imageRoot, bool requireImages = true)
    {
        using var doc = JsonFiles.Parse(path);
        var items = new List<VqaItem>();
        foreach (var r in JsonFiles.ArrayItems(doc, path))
        {
            long qid = r.Long("question_id");
            var question = r.String("question");
            var image = r.String("image");
            var answers = new List<string>();
            if (r.Element.TryGetProperty("answer", out var answer))
            {
                switch (answer.ValueKind)
                {
                    case JsonValueKind.String: answers.Add(answer.GetString()!); break;
                    case JsonValueKind.Array:
                        foreach (var a in answer.EnumerateArray())
                            answers.Add(a.ValueKind == JsonValueKind.String ? a.GetString()! : throw r.Error("has a non-string answer"));
                        break;
                    default: throw r.Error("field 'answer' should be a string or an array of strings");
                }
            }
            long imageId = ImageIdFromPath(image);
            items.Add(new VqaItem(qid, imageId, ImagePaths.Resolve(requireImages, r.Where, Path.Combine(imageRoot, image)), question, answers));
        }
        return new(items, []);
    }

    private static long ImageIdFromPath(string image)
    {
        var name = Path.GetFileNameWithoutExtension(image);
        int start = name.Length;
        while (start > 0 && char.IsAsciiDigit(name[start - 1])) start--;
        return start < name.Length ? long.Parse(name[start..]) : -1;
    }
}
