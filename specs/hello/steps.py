def numbers(n: int) -> list[int]:
    return list(range(n))


def square(xs: list[int]) -> list[int]:
    return [x * x for x in xs]


def total(xs: list[int], ys: list[int]) -> dict:
    return {"sum_x": sum(xs), "sum_y": sum(ys)}
