using System.Security.Cryptography;
using System.Text;
using EfficientVlm.Grains.Abstractions;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Mvc;
using Orleans.Dashboard;
using Prometheus;

namespace EfficientVlm.Silo.Gateway;

/// <summary>Settings of the REST gateway; configuration section <c>Fleet:Gateway</c>.</summary>
public sealed record GatewayOptions
{
    public const string SectionName = "Fleet:Gateway";

    /// <summary>Keys accepted in the <c>X-Api-Key</c> header. None configured: every /v1 and dashboard call is refused (401).</summary>
    public IReadOnlyList<string> ApiKeys { get; init; } = [];

    /// <summary>Largest request body (multipart images included); larger requests get 413.</summary>
    public long MaxRequestBytes { get; init; } = 16 * 1024 * 1024;

    /// <summary>Map the Orleans dashboard at /dashboard (behind the API key).</summary>
    public bool Dashboard { get; init; } = true;
}

/// <summary>
/// Body of <c>POST /v1/variants</c>: task (vqa, nlvr2, retrieval, captioning), compact model id, target sparsity
/// (default: the paper's for the task), dataset hash, and the training budgets (none: the defaults of
/// <see cref="JobSettings"/> for a new variant, whatever an existing one was made with).
/// </summary>
public sealed record CreateVariantRequest(string? Task, string? Model, double? Target, string? Dataset, JobSettings? Budgets);

/// <summary>
/// The REST gateway hosted with the silo: the SDK's calls over HTTP (JSON, multipart image upload),
/// API-key authentication, problem-details errors, request size limits, an OpenAPI document
/// (/openapi/v1.json), Prometheus metrics (/metrics) and the Orleans dashboard (/dashboard).
/// </summary>
public static class RestGateway
{
    public const string ApiKeyHeader = "X-Api-Key";

    public static WebApplicationBuilder AddFleetGateway(this WebApplicationBuilder builder)
    {
        var options = builder.Configuration.GetSection(GatewayOptions.SectionName).Get<GatewayOptions>() ?? new GatewayOptions();
        if (options.MaxRequestBytes < 1024) throw new ArgumentException("Fleet:Gateway:MaxRequestBytes must be at least 1024.");
        builder.Services.AddSingleton(options);
        builder.Services.AddProblemDetails();
        builder.Services.AddOpenApi();
        builder.WebHost.ConfigureKestrel(k => k.Limits.MaxRequestBodySize = options.MaxRequestBytes);
        builder.Services.Configure<FormOptions>(f =>
        {
            f.MultipartBodyLengthLimit = options.MaxRequestBytes;
            f.ValueLengthLimit = 64 * 1024;
        });
        return builder;
    }

    public static WebApplication MapFleetGateway(this WebApplication app)
    {
        var options = app.Services.GetRequiredService<GatewayOptions>();
        if (options.ApiKeys.Count == 0)
            app.Logger.LogWarning("No API keys in Fleet:Gateway:ApiKeys: the REST gateway refuses every call (401).");
        app.UseExceptionHandler();
        app.UseStatusCodePages();
        // The key is checked before routing and binding: an unauthenticated body is never read.
        var keys = new ApiKeys(options);
        app.UseWhen(c => c.Request.Path.StartsWithSegments("/v1") || (options.Dashboard && c.Request.Path.StartsWithSegments("/dashboard")),
            branch => branch.Use(async (context, next) =>
            {
                if (keys.Refusal(context.Request.Headers[ApiKeyHeader].ToString()) is { } problem)
                {
                    context.Response.StatusCode = 401;
                    await problem.ExecuteAsync(context);
                    return;
                }
                await next(context);
            }));
        app.MapOpenApi("/openapi/{documentName}.json");
        app.MapMetrics("/metrics");

        var v1 = app.MapGroup("/v1").DisableAntiforgery();
        v1.MapGet("/variants", async (IGrainFactory grains) =>
                Results.Ok(await grains.GetGrain<IFleetRegistryGrain>(IFleetRegistryGrain.DefaultKey).ListVariants()))
            .WithSummary("List the task variants.");
        v1.MapGet("/variants/{id}", async (string id, IGrainFactory grains) =>
                await Guard(async () => await grains.GetGrain<IFleetRegistryGrain>(IFleetRegistryGrain.DefaultKey).GetVariant(id) is { } v
                    ? Results.Ok(v) : NotFound($"No variant '{id}'.")))
            .WithSummary("One variant: stage, progress, history, metrics.");
        v1.MapPost("/variants", async (CreateVariantRequest request, IGrainFactory grains) =>
                await Guard(async () =>
                {
                    var task = VariantSpec.ParseTask(request.Task);
                    if (request.Dataset is null) throw new ArgumentException("The request names no dataset (its hash, from `fleet data list`).");
                    var spec = new VariantSpec(task, request.Model ?? throw new ArgumentException("The request names no compact model."),
                        request.Target ?? VariantSpec.DefaultTargetSparsity(task), request.Dataset);
                    VariantInfo info;
                    try
                    {
                        info = await grains.GetGrain<IFleetRegistryGrain>(IFleetRegistryGrain.DefaultKey).EnsureVariant(spec, request.Budgets);
                    }
                    catch (NoGpuSiloException e)
                    {
                        return Results.Problem(title: "no GPU silo", statusCode: 503, detail:
                            $"{e.Message} Variant '{spec.VariantId}' is saved and starts when a GPU silo joins; follow it at /v1/variants/{spec.VariantId}.");
                    }
                    return info.Stage == VariantStage.Ready ? Results.Ok(info) : Results.Accepted($"/v1/variants/{info.Id}", info);
                }))
            .WithSummary("Get the variant for (task, model, target, dataset): the existing one (200 when ready), or one started on a GPU silo " +
                         "(202; follow it at the Location). Budgets, when given, must match an existing variant's.");
        v1.MapDelete("/variants/{id}", async (string id, IGrainFactory grains) =>
                await Guard(async () =>
                {
                    await grains.GetGrain<IFleetRegistryGrain>(IFleetRegistryGrain.DefaultKey).RemoveVariant(id);
                    return Results.NoContent();
                }))
            .WithSummary("Remove a variant, running or not (204): its job stops, its replicas retire, its state goes; stored models stay.");
        v1.MapGet("/aliases", async (IGrainFactory grains) =>
                Results.Ok(await grains.GetGrain<IFleetRegistryGrain>(IFleetRegistryGrain.DefaultKey).ListAliases()))
            .WithSummary("List the aliases (the {id} of the calls below may be an alias).");
        v1.MapPost("/variants/{id}/vqa", async (string id, IFormFile image, [FromForm] string question, IGrainFactory grains) =>
                await Guard(async () => Results.Ok(new { answer = await (await Replica(grains, id)).Answer(await Bytes(image), question) })))
            .WithSummary("VQA: answer a question about an image (multipart: image, question).");
        v1.MapPost("/variants/{id}/nlvr2", async (string id, IFormFile left, IFormFile right, [FromForm] string statement, IGrainFactory grains) =>
                await Guard(async () => Results.Ok(new { holds = await (await Replica(grains, id)).Verify(await Bytes(left), await Bytes(right), statement) })))
            .WithSummary("NLVR2: is the statement true of the two images (multipart: left, right, statement)?");
        v1.MapPost("/variants/{id}/caption", async (string id, IFormFile image, IGrainFactory grains) =>
                await Guard(async () => Results.Ok(new { caption = await (await Replica(grains, id)).Caption(await Bytes(image)) })))
            .WithSummary("Captioning: describe an image (multipart: image).");
        v1.MapPost("/variants/{id}/retrieval/images", async (string id, [FromForm] string gallery, [FromForm] string text, [FromForm] int? k, IGrainFactory grains) =>
                await Guard(async () => Results.Ok(await (await Replica(grains, id)).RankImages(gallery, text, k ?? 5))))
            .WithSummary("Retrieval: the k images of a registered gallery that best match a text (form: gallery, text, k).");
        v1.MapPost("/variants/{id}/retrieval/texts", async (string id, [FromForm] string gallery, IFormFile image, [FromForm] int? k, IGrainFactory grains) =>
                await Guard(async () => Results.Ok(await (await Replica(grains, id)).RankTexts(gallery, await Bytes(image), k ?? 5))))
            .WithSummary("Retrieval: the k texts of a registered gallery that best match an image (multipart: gallery, image, k).");

        if (options.Dashboard) app.MapOrleansDashboard("/dashboard");
        return app;
    }

    // Resolutions of variant ids and aliases, kept 2 s as the SDK keeps them: most requests skip the registry.
    private static readonly ServingResolver Resolver = new(TimeSpan.FromSeconds(2));

    /// <summary>A replica of the variant <paramref name="id"/> names (a variant id or an alias).</summary>
    private static Task<IInferenceReplicaGrain> Replica(IGrainFactory grains, string id) =>
        Resolver.ReplicaAsync(grains, id, name => grains.GetGrain<IFleetRegistryGrain>(IFleetRegistryGrain.DefaultKey).Resolve(name));

    private static async Task<byte[]> Bytes(IFormFile file)
    {
        if (file.Length == 0) throw new ArgumentException($"The uploaded '{file.Name}' is empty.");
        using var buffer = new MemoryStream((int)file.Length);
        await file.CopyToAsync(buffer);
        return buffer.ToArray();
    }

    private static IResult NotFound(string detail) => Results.Problem(title: "not found", detail: detail, statusCode: 404);

    /// <summary>
    /// Turns the fleet's errors into problem details, by type (never by message): unknown variant 404, not ready 409,
    /// other bad input 400, no GPU silo and a busy replica 503. Anything else is ours: 500.
    /// </summary>
    private static async Task<IResult> Guard(Func<Task<IResult>> call)
    {
        try
        {
            return await call();
        }
        catch (Exception e) when (Status(e) is { } problem)
        {
            return Results.Problem(title: problem.Title, detail: e.Message, statusCode: problem.Code);
        }
    }

    /// <summary>The status and title of a fleet error; null for an error that is not the caller's and not a known outage.</summary>
    private static (int Code, string Title)? Status(Exception e) => e switch
    {
        UnknownVariantException => (404, "not found"),
        NotReadyException => (409, "variant not ready"),
        ArgumentException => (400, "bad input"),
        NoGpuSiloException => (503, "no GPU silo"),
        ReplicaBusyException => (503, "busy"),
        _ => null,
    };

    /// <summary>The configured keys, compared in constant time (as SHA-256 digests).</summary>
    private sealed class ApiKeys(GatewayOptions options)
    {
        private readonly byte[][] _keys = options.ApiKeys.Select(k => SHA256.HashData(Encoding.UTF8.GetBytes(k))).ToArray();

        /// <summary>Null when <paramref name="given"/> is a valid key; otherwise the 401 problem to send.</summary>
        public IResult? Refusal(string given)
        {
            var hash = SHA256.HashData(Encoding.UTF8.GetBytes(given));
            bool ok = given.Length > 0 && _keys.Any(k => CryptographicOperations.FixedTimeEquals(k, hash));
            return ok ? null : Results.Problem(title: "unauthorized", statusCode: 401,
                detail: given.Length == 0 ? $"Send an API key in the {ApiKeyHeader} header." : "The API key is not valid.");
        }
    }
}
